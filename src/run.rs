//! Runs a job: loads its input and catalog, starts the Timely workers, waits.
//!
//! This is the one place that touches files, clocks and threads for a job
//! run; the dataflow itself (`crate::dataflow`) gets readers, a sink factory
//! and a clock handed in. The same binary runs one process with `-w N`
//! threads or joins a cluster of processes (`--processes`, `--process`,
//! `--hostfile`), each process owning the partitions of its workers.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::catalog::{Catalog, CatalogError};
use crate::datadir::DataDir;
use crate::dataflow::partition::TimeRules;
use crate::dataflow::{self, Attribution, Clock, Plan, ReaderFactory, SourceSettings, WindowRules};
use crate::dataflow::{Checkpoint, CommittedWindows, RestoredWindows};
use crate::event::salt::UserSalt;
use crate::event::{EventTime, Key, KeyType};
use crate::job::{Job, SinkSpec, SourceSpec};
use crate::log::{Log, LogOptions, LogView, Retention};
use crate::sink::metered::MeteredSink;
use crate::sink::store::{Fault, StoreSink, StoreWindows};
use crate::sink::{FileSink, MemorySink, Sink};
use crate::sources::file::{read_clicks_path, MaxRejected};
use crate::sources::generated;
use crate::sources::generator::{write_catalog, GeneratorConfig};
use crate::sources::kafka::{KafkaProblem, KafkaTopic};
use crate::sources::log::LogPartitionReader;
use crate::sources::memory::{ClickChunks, VecReader};
use crate::sources::position::{resolve_range, Bound, LogBounds, Position, PositionError};
use crate::store::cassandra::{CassandraConfig, CassandraReader, CassandraStore, Faults};
use crate::store::settings::{CatalogStamp, Origin, RunSettings, ORIGIN_KEY, SETTINGS_KEY};
use crate::store::{EmbeddedStore, EpochStore, Recovered, StoreReader, StoreSnapshot};
use crate::telemetry::progress::{self, Amount, ProgressOptions, Work};
use crate::telemetry::{CommitStats, SourceStats, StatsSnapshot, MAX_UNKNOWN_ADS_KEPT};

/// Largest worker thread count per process.
pub const MAX_WORKERS: usize = 256;
/// Salt of the generator's user keys (its users are synthetic).
const GENERATOR_SALT: u64 = 0x7a11_7a11_7a11_7a11;

/// Command-line overrides of a job run.
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    pub workers: usize,
    pub processes: usize,
    pub process: usize,
    pub hostfile: Option<PathBuf>,
    pub input: Option<PathBuf>,
    pub catalog: Option<PathBuf>,
    pub output: Option<PathBuf>,
    /// Where a file sink writes the late ledger (default: beside `output`,
    /// see [`crate::sink::file::late_path`]).
    pub late: Option<PathBuf>,
    /// How many rejected lines of a click file the run accepts.
    pub max_rejected: MaxRejected,
    /// Where the embedded log and store live.
    pub data_dir: DataDir,
    /// Read the log only up to the end offsets seen at start, then finish.
    pub bounded: bool,
    /// With `bounded`: commit at the data frontier and leave later windows
    /// open, instead of finalizing every window (SEMANTICS.md, "The end of a
    /// bounded run").
    pub leave_open: bool,
    /// Where a log run starts when its store has no committed epoch
    /// (default `earliest`); ignored, with a note, when it has one.
    pub from: Option<Position>,
    /// Where a log run ends: bounded at these offsets (`--bounded` is
    /// `latest`).
    pub to: Option<Position>,
    /// Read the log through this view instead of opening (and owning) it:
    /// a backfill beside a job that owns the log. No retention runs.
    pub log_view: Option<LogView>,
    /// The embedded log, already open in this process (`tally up`, where
    /// ingest appends to it); opened from the data directory when `None`.
    pub log: Option<Arc<Log>>,
    /// The embedded store, already open in this process (`tally up`, whose
    /// query API reads it); taken by the run. Opened from the data directory
    /// when `None`.
    pub store: Option<SharedStore>,
    /// Where the sources count clicks (`tally up` shows them); a fresh set
    /// when `None`.
    pub stats: Option<Arc<SourceStats>>,
    /// Where the epoch commits are reported (`/metrics`); `None`: nowhere.
    pub commits: Option<Arc<CommitStats>>,
    /// In a cluster: how long the committed frontier may stand still before
    /// this process takes a peer for gone and stops (fail-stop); `None`
    /// for [`DEFAULT_PEER_TIMEOUT`].
    pub peer_timeout: Option<Duration>,
    /// How a run with an end (a file, a generator, a bounded range of a
    /// log) shows its progress; a live run shows none.
    pub progress: ProgressOptions,
    /// The caller has logged the run's start-up event ([`describe`]):
    /// `tally up`, before it serves.
    pub announced: bool,
}

/// How long a cluster waits for progress before it takes a peer for gone.
pub const DEFAULT_PEER_TIMEOUT: Duration = Duration::from_secs(60);

/// An open embedded store handed to a run, which takes it once.
pub type SharedStore = Arc<Mutex<Option<EmbeddedStore>>>;

impl Default for DataDir {
    fn default() -> Self {
        DataDir::new(crate::datadir::DEFAULT_DATA_DIR)
    }
}

/// Why a run could not start or did not finish.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Input(String),
    #[error("{0}")]
    Catalog(#[from] CatalogError),
    #[error("{0}")]
    Sink(String),
    #[error("{0}")]
    Store(#[from] crate::store::StoreError),
    #[error("{0}")]
    Log(#[from] crate::log::LogError),
    #[error("timely: {0}")]
    Cluster(String),
    /// The Kafka brokers did not answer: a restart may succeed.
    #[error("{0}")]
    Unavailable(String),
}

impl From<KafkaProblem> for RunError {
    fn from(problem: KafkaProblem) -> RunError {
        match problem {
            KafkaProblem::Config(reason) => RunError::Input(reason),
            KafkaProblem::Unavailable(reason) => RunError::Unavailable(reason),
        }
    }
}

impl RunError {
    /// The status of [`crate::exit`]: bad input or configuration is a
    /// usage error, a held lock is busy, the rest failed while running.
    pub fn exit_code(&self) -> i32 {
        match self {
            RunError::Usage(_) | RunError::Input(_) | RunError::Catalog(_) => crate::exit::USAGE,
            RunError::Store(e) => e.exit_code(),
            RunError::Log(e) => e.exit_code(),
            RunError::Sink(_) | RunError::Cluster(_) | RunError::Unavailable(_) => crate::exit::FAILED,
        }
    }
}

/// What a finished run reports.
pub struct RunReport {
    /// Summary of the input (lines, rejected lines with their numbers).
    pub input: String,
    pub clicks_loaded: u64,
    /// What the sources decided, over the clicks `counted` says.
    pub stats: StatsSnapshot,
    pub elapsed: Duration,
    /// Committed output when the sink is in memory.
    pub memory: Option<crate::sink::memory::Committed>,
    /// Ads counted under campaign `unknown` (the first 1000 names), over
    /// the clicks `counted` says.
    pub unknown_ads: Vec<Key>,
    pub counted: Counted,
}

/// Whose clicks a [`RunReport`]'s figures count.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counted {
    /// The whole run's: one process, or process 0 of a cluster, which
    /// gathers every process's figures at the end ([`dataflow::totals`]).
    Whole,
    /// This process's only: a process of a cluster other than 0. Its part
    /// is done; process 0 reports the totals.
    Part { process: usize },
}

/// One process's figures, sent to worker 0 at the end of a cluster's run.
#[derive(Default, serde::Serialize, serde::Deserialize)]
struct ProcessFigures {
    stats: StatsSnapshot,
    unknown_ads: Vec<Key>,
}

impl ProcessFigures {
    fn of(stats: &SourceStats) -> ProcessFigures {
        ProcessFigures { stats: stats.read(), unknown_ads: stats.unknown_ads() }
    }

    /// The sum of every process's figures; an ad unknown in several
    /// processes is named once, and at most [`MAX_UNKNOWN_ADS_KEPT`] are.
    fn sum(all: &[Vec<u8>]) -> ProcessFigures {
        let mut stats = StatsSnapshot::default();
        let mut unknown_ads = std::collections::BTreeSet::new();
        for bytes in all {
            let figures: ProcessFigures = bincode::deserialize(bytes).expect("every process runs the same tally");
            stats.add(&figures.stats);
            unknown_ads.extend(figures.unknown_ads);
        }
        ProcessFigures { stats, unknown_ads: unknown_ads.into_iter().take(MAX_UNKNOWN_ADS_KEPT).collect() }
    }
}

/// Loaded clicks per partition, each taken once by the worker that owns it.
type Partitions = Arc<Vec<Mutex<Option<ClickChunks>>>>;

/// Runs `job`: to completion for bounded sources, or until stopped.
///
/// In a cluster (`--processes N`), a store sink lives with process 0: it
/// begins a generation, resumes from the store and hands the start
/// (checkpoints, resume epoch, generation, the user-hash salt) to every
/// worker of every process ([`dataflow::bootstrap`]). With the embedded
/// store the windows live on process 0's workers, beside the store they
/// read committed windows back from. With Cassandra, which every process
/// reaches, the windows are spread over all workers, and every process
/// restores its own workers' windows from Cassandra ([`ClusterRestore`]).
pub fn run(job: &Job, options: &RunOptions) -> Result<RunReport, RunError> {
    without_huge_pages();
    let config = timely_config(options)?;
    check_shape(job, options)?;
    let (catalog, stamp) = load_catalog(job, options)?;
    let attribution = Arc::new(attribution(job, catalog.as_ref()));
    let store_cluster = options.processes > 1 && store_sink(job, options);
    let cassandra_cluster = match &job.sink {
        SinkSpec::Cassandra(config) if store_cluster => Some(config.clone()),
        _ => None,
    };
    // A click file is read (and refused, if it must be) before the sink
    // creates anything.
    let file = load_file_input(job, options)?;
    let mut output = if store_cluster && options.process > 0 {
        Output::empty(Arc::new(Mutex::new(None)))
    } else {
        sink(job, options, job.settings(stamp), catalog.as_ref())?
    };
    let (readers, input, clicks_loaded, log) = load_input(job, options, &output, file)?;
    check_resume_offsets(&output.resume, log.as_ref().map(|l| l.ends.as_slice()))?;
    // A live run of a log has no end to show progress towards.
    let reading = log.as_ref().map_or(Some(clicks_loaded), |l| l.reading);
    let (start, salt) = log.map(|l| (l.start, l.salt)).unwrap_or_default();
    output.open_store_sink(job.partitions, &start)?;
    let stats = options.stats.clone().unwrap_or_default();
    let errors = dataflow::CommitErrors::default();
    let placeholder: ReaderFactory = Arc::new(|p, _| panic!("partition {p}: readers are made once the start is known"));
    let mut plan = plan(job, placeholder, attribution, Arc::clone(&stats), Arc::clone(&errors));
    let boot = Boot {
        resume: output.resume.clone(),
        resume_epoch: output.resume_epoch,
        committed: output.committed,
        generation: output.generation,
        start_offsets: start,
        salt: salt.map(UserSalt::to_bytes),
    };
    let boot = bincode::serialize(&boot).map_err(|e| RunError::Cluster(format!("start of the cluster: {e}")))?;
    plan.source.leave_open = options.leave_open;
    plan.windows.keep_state = store_sink(job, options);
    let finish = Arc::clone(&plan.source.finish);
    let sources = options.workers.max(1);
    let leave_open = options.leave_open;
    let restore = cassandra_cluster.map(|config| Arc::new(ClusterRestore::new(config, job, options)));
    if let Some(restore) = &restore {
        output.restored.retain(|key_type, key| restore.owns(key_type, key));
    }
    plan.restored = Arc::new(output.restored);
    plan.committed_windows = output.committed_windows;
    plan.window_workers = (store_cluster && restore.is_none()).then_some(options.workers.max(1));
    for note in output.resumed.lines().filter(|line| !line.is_empty()) {
        tracing::info!("{note}");
    }
    let sink = output.sink;
    if !options.announced {
        tracing::info!("{}", describe(job, options));
    }
    stop_cleanly_on_signal(Arc::clone(&plan.commit_lock))?;
    let cluster = options.processes > 1;
    let peer_timeout = options.peer_timeout.unwrap_or(DEFAULT_PEER_TIMEOUT);
    let started = Instant::now();
    let commits = options.commits.clone();
    let live = reading.is_none();
    let shown = if live { ProgressOptions::default() } else { options.progress.clone() };
    // In a cluster each process reads only its own partitions.
    let work = Work { unit: "clicks", total: reading.filter(|_| !cluster) };
    let read = || Amount::items(stats.read().read_total());
    // Worker 0 of a cluster gathers every process's figures here.
    let gathered: Arc<Mutex<Option<ProcessFigures>>> = Arc::default();
    let (process_stats, whole) = (Arc::clone(&stats), Arc::clone(&gathered));
    progress::show(&shown, work, read, || {
        execute(config, move |worker| {
            let boot = if cluster { dataflow::bootstrap::from_worker_zero(worker, boot.clone()) } else { boot.clone() };
            let boot: Boot = bincode::deserialize(&boot).expect("every process runs the same tally");
            let sink = if worker.index() == 0 { sink.lock().unwrap_or_else(|e| e.into_inner()).take() } else { None };
            let sink = sink.map(|sink| match &commits {
                Some(stats) => Box::new(MeteredSink::new(sink, Arc::clone(stats), system_clock(), live)) as Box<dyn Sink + Send>,
                None => sink,
            });
            let mut plan = plan.clone();
            plan.source.readers = readers.factory(boot.salt.map(UserSalt::from_bytes));
            plan.source.resume = Arc::new(boot.resume);
            plan.source.resume_epoch = boot.resume_epoch;
            plan.source.start = Arc::new(boot.start_offsets);
            let errors = Arc::clone(&plan.errors);
            if let Some(restore) = restore.as_ref().filter(|_| worker.index() >= sources) {
                match restore.windows(boot.committed, boot.resume_epoch, boot.generation) {
                    Ok((restored, committed)) => {
                        plan.restored = restored;
                        plan.committed_windows = Some(committed);
                    }
                    Err(error) => {
                        // Fail-stop: this process ends, and its peers with it.
                        errors.lock().unwrap_or_else(|e| e.into_inner()).get_or_insert(error);
                        return;
                    }
                }
            }
            let probe = worker.dataflow::<u64, _, _>(|scope| dataflow::build(scope, plan, sink));
            let frontier = || probe.with_frontier(|f| f.iter().next().copied());
            let settled = || probe.done() || (leave_open && finish.committed(sources, frontier()));
            let mut progress = (frontier(), Instant::now());
            worker.step_or_park_while(Some(Duration::from_millis(20)), || {
                if cluster {
                    watch_peers(&mut progress, frontier(), peer_timeout);
                }
                !settled() && errors.lock().map(|e| e.is_none()).unwrap_or(false)
            });
            if cluster && probe.done() {
                // Every click of every process is counted: the first worker
                // of each process sends its process's figures.
                let figures = (worker.index() % sources == 0).then(|| ProcessFigures::of(&process_stats));
                let bytes = figures.map(|f| bincode::serialize(&f).expect("figures serialize"));
                let mut still = (None, Instant::now());
                let all = dataflow::totals::to_worker_zero(worker, bytes, || watch_peers(&mut still, None, peer_timeout));
                if worker.index() == 0 {
                    whole.lock().unwrap_or_else(|e| e.into_inner()).replace(ProcessFigures::sum(&all));
                }
            }
        })?;
        match errors.lock().unwrap_or_else(|e| e.into_inner()).take() {
            Some(error) => Err(RunError::Sink(error)),
            None => Ok(()),
        }
    })?;
    let elapsed = started.elapsed();
    let gathered = gathered.lock().unwrap_or_else(|e| e.into_inner()).take();
    let (figures, counted) = match gathered {
        Some(whole) => (whole, Counted::Whole),
        None if cluster && options.process > 0 => (ProcessFigures::of(&stats), Counted::Part { process: options.process }),
        None => {
            assert!(!cluster, "worker 0 of a cluster that ran to its end gathered every process's figures");
            (ProcessFigures::of(&stats), Counted::Whole)
        }
    };
    Ok(RunReport {
        input,
        clicks_loaded,
        stats: figures.stats,
        elapsed,
        memory: output.memory.map(|m| m.take()),
        unknown_ads: figures.unknown_ads,
        counted,
    })
}

/// Turns transparent huge pages off for this process (`PR_SET_THP_DISABLE`;
/// it holds for memory mapped before, from the next fault on). The
/// allocator asks for them for its heap, and where the kernel then compacts
/// memory to find a free 2 MiB page (`defrag = madvise`, the common
/// setting), a fault stalls: a 5M-click file run right after another
/// process freed ~1 GB took 2.9 s with them and 2.2 s without (1.4 against
/// 0.4 sys-s), the checkpointed job 2.7 against 2.4 s, and peak RSS fell by
/// 50-100 MB in both. Refused (another OS), it changes nothing.
fn without_huge_pages() {
    #[cfg(target_os = "linux")]
    // SAFETY: sets a flag of this process; no memory is touched.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
}

/// Runs `worker` on every worker thread of `config` until all are done.
fn execute(config: timely::Config, worker: impl Fn(&mut timely::worker::Worker) + Send + Sync + 'static) -> Result<(), RunError> {
    let guards = timely::execute(config, worker).map_err(RunError::Cluster)?;
    guards.join().into_iter().try_for_each(|result| result.map_err(RunError::Cluster))
}

/// A run for its start-up event: the job, what it reads, its workers, and
/// where it commits.
pub fn describe(job: &Job, options: &RunOptions) -> String {
    let source = match (&options.input, &job.source) {
        (Some(path), _) | (None, SourceSpec::File { path: Some(path) }) => format!("file {}", path.display()),
        (None, SourceSpec::File { path: None }) => "a file".to_owned(),
        (None, SourceSpec::Generator(config)) => format!("{} generated clicks (seed {})", config.clicks, config.seed),
        (None, SourceSpec::Log { dir }) => dir.clone().unwrap_or_else(|| options.data_dir.log()).display().to_string(),
        (None, SourceSpec::Kafka { brokers, topic }) => format!("kafka topic {topic} on {brokers}"),
    };
    let sink = match (&options.output, &job.sink) {
        (Some(path), _) | (None, SinkSpec::File { path: Some(path) }) => format!("file {}", path.display()),
        (None, SinkSpec::File { path: None }) => "a file".to_owned(),
        (None, SinkSpec::Memory) => "memory".to_owned(),
        (None, SinkSpec::Store) => format!("the embedded store in {}", options.data_dir.store().display()),
        (None, SinkSpec::Cassandra(config)) => format!("cassandra {} keyspace {}", config.hosts_text(), config.keyspace),
    };
    let process = match options.processes {
        0 | 1 => String::new(),
        n => format!(", process {} of {n}", options.process),
    };
    let bounded = if options.bounded || options.to.is_some() { ", bounded" } else { "" };
    let workers = match options.workers.max(1) {
        1 => "1 worker".to_owned(),
        n => format!("{n} workers"),
    };
    format!("job: {} on {source} ({} partitions, {workers}{process}{bounded}), committing to {sink}", job.name, job.partitions)
}

/// What every worker of a cluster starts from, as process 0 knows it.
#[derive(serde::Serialize, serde::Deserialize)]
struct Boot {
    resume: BTreeMap<u32, Checkpoint>,
    resume_epoch: u64,
    /// Whether the store had a committed epoch (`resume_epoch`).
    committed: bool,
    /// The generation process 0 began.
    generation: u64,
    start_offsets: Vec<u64>,
    salt: Option<[u8; 16]>,
}

/// A process's restored windows and its read-back of committed ones.
type ProcessWindows = (Arc<RestoredWindows>, Arc<dyn CommittedWindows>);

/// How the workers of a Cassandra cluster get their windows: each process
/// keeps only the windows its own workers own; process 0 from the epoch it
/// resumed (`Output::take_over`), the others read them from Cassandra once
/// process 0 has begun its generation and applied its last committed epoch
/// (they learn that from the boot). The state read is that epoch's: no
/// later epoch can be committed before every worker of every process has
/// built its dataflow.
struct ClusterRestore {
    config: CassandraConfig,
    job: String,
    windows_ms: Vec<u64>,
    /// This process's workers are `first_worker..first_worker + workers`.
    first_worker: u64,
    workers: u64,
    peers: u64,
    /// Read once per process, by its first worker to get there.
    read: OnceLock<Result<ProcessWindows, String>>,
}

impl ClusterRestore {
    fn new(config: CassandraConfig, job: &Job, options: &RunOptions) -> ClusterRestore {
        let workers = options.workers.max(1) as u64;
        ClusterRestore {
            config,
            job: job.name.clone(),
            windows_ms: job.windows_ms.clone(),
            first_worker: options.process as u64 * workers,
            workers,
            peers: options.processes as u64 * workers,
            read: OnceLock::new(),
        }
    }

    /// Whether one of this process's workers owns the windows of a key.
    fn owns(&self, key_type: KeyType, key: &str) -> bool {
        let worker = dataflow::windowing::route_key(key_type, key) % self.peers;
        (self.first_worker..self.first_worker + self.workers).contains(&worker)
    }

    /// This process's windows of epoch `epoch` (if `committed`), and the
    /// read-back of committed windows for generation `generation`.
    fn windows(&self, committed: bool, epoch: u64, generation: u64) -> Result<ProcessWindows, String> {
        let read = || {
            let reader = CassandraReader::open(&self.config, &self.job).map_err(|e| e.to_string())?;
            let mut restored = RestoredWindows::default();
            if committed {
                let recovered = reader.snapshot_now().and_then(|s| s.last_committed()).map_err(|e| e.to_string())?;
                let recovered = recovered.filter(|r| r.epoch == epoch).ok_or_else(|| {
                    format!("job {} in Cassandra: epoch {epoch}, which process 0 resumed from, is no longer the applied one: a newer generation has taken over", self.job)
                })?;
                restored = crate::sink::store::resume(&recovered).map_err(|e| e.to_string())?.1;
                restored.retain(|key_type, key| self.owns(key_type, key));
                tracing::info!(
                    "restored from epoch {epoch} in Cassandra: {} windows and {} pending late partials of this process's workers",
                    restored.windows.len(),
                    restored.pending.len()
                );
            }
            let committed = StoreWindows::new(Box::new(reader), generation, &self.windows_ms).map_err(|e| e.to_string())?;
            let committed: Arc<dyn CommittedWindows> = Arc::new(committed);
            Ok((Arc::new(restored), committed))
        };
        self.read.get_or_init(read).clone()
    }
}

/// Fail-stop for a peer that vanished without closing its sockets: Timely
/// would wait for it forever. The committed frontier of a healthy cluster
/// moves at least once an epoch (it follows the clock when the log is
/// caught up), so a frontier that stands still for `timeout` means a peer
/// is gone: this process stops, and the supervisor restarts the cluster.
fn watch_peers(progress: &mut (Option<EventTime>, Instant), now: Option<EventTime>, timeout: Duration) {
    if now != progress.0 {
        *progress = (now, Instant::now());
    } else if progress.1.elapsed() > timeout {
        tracing::error!(
            "no progress for {} s (committed frontier {:?}): a peer process is unreachable or stalled; stopping this process so the cluster can restart (fail-stop)",
            timeout.as_secs(),
            now
        );
        std::process::exit(1);
    }
}

/// A `timely::Config` built by hand, so unknown CLI flags never reach timely.
fn timely_config(options: &RunOptions) -> Result<timely::Config, RunError> {
    let workers = options.workers.max(1);
    if workers > MAX_WORKERS {
        return Err(RunError::Usage(format!("-w {workers}: at most {MAX_WORKERS} workers per process")));
    }
    if options.process >= options.processes.max(1) {
        return Err(RunError::Usage(format!("--process {}: must be below --processes {}", options.process, options.processes.max(1))));
    }
    let communication = if options.processes <= 1 {
        timely::CommunicationConfig::Process(workers)
    } else {
        let addresses = read_hostfile(options)?;
        timely::CommunicationConfig::Cluster { threads: workers, process: options.process, addresses, report: false, zerocopy: false }
    };
    Ok(timely::Config { communication, worker: timely::WorkerConfig::default() })
}

fn read_hostfile(options: &RunOptions) -> Result<Vec<String>, RunError> {
    let path = options.hostfile.as_ref().ok_or_else(|| RunError::Usage("--processes > 1 needs --hostfile".into()))?;
    let text = std::fs::read_to_string(path).map_err(|e| RunError::Usage(format!("hostfile {}: {e}", path.display())))?;
    let addresses: Vec<String> = text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).map(String::from).collect();
    if addresses.len() != options.processes {
        return Err(RunError::Usage(format!(
            "hostfile {}: {} addresses for --processes {}",
            path.display(),
            addresses.len(),
            options.processes
        )));
    }
    Ok(addresses)
}

/// How the workers get their readers: ready-made, or from a Kafka topic
/// once the salt of the user hash is known (process 0 hands it out).
#[derive(Clone)]
enum Readers {
    Ready(ReaderFactory),
    Kafka { topic: KafkaTopic, group: String, ends: Option<Vec<u64>> },
}

impl Readers {
    fn factory(&self, salt: Option<UserSalt>) -> ReaderFactory {
        match self {
            Readers::Ready(factory) => Arc::clone(factory),
            Readers::Kafka { topic, group, ends } => {
                let (topic, group, ends) = (topic.clone(), group.clone(), ends.clone());
                let salt = salt.expect("a Kafka job starts with the data directory's salt");
                Arc::new(move |p, offset| {
                    let end = ends.as_ref().map(|ends| ends[p as usize]);
                    let reader = topic.reader(&group, p, offset, end, salt).unwrap_or_else(|e| panic!("{e}"));
                    Box::new(reader) as Box<dyn dataflow::PartitionReader>
                })
            }
        }
    }
}

/// The readers of the job's input, a summary, the number of clicks, and
/// for a log where the run reads it.
type Input = (Readers, String, u64, Option<LogRange>);

/// Where a run reads a log (the embedded log or a Kafka topic).
struct LogRange {
    /// The log's end offsets when the run started.
    ends: Vec<u64>,
    /// Where partitions without a committed checkpoint start.
    start: Vec<u64>,
    /// The salt a source that hashes on read uses (Kafka: process 0's).
    salt: Option<UserSalt>,
    /// Clicks a bounded run reads; `None` for a live run.
    reading: Option<u64>,
}

/// A click file read whole: its clicks by partition, and its summary.
type LoadedFile = (Vec<ClickChunks>, String);

/// The job's click file (`--input`, or `source.path`), read whole and
/// checked against `--max-rejected`; `None` when the input is not a file.
fn load_file_input(job: &Job, options: &RunOptions) -> Result<Option<LoadedFile>, RunError> {
    match (&job.source, &options.input) {
        (_, Some(path)) | (SourceSpec::File { path: Some(path) }, None) => {
            let salt = file_salt(&options.data_dir, options.processes);
            let input =
                read_clicks_path(path, job.partitions, &salt, options.workers.max(1)).map_err(|e| RunError::Input(e.to_string()))?;
            let report = input.report();
            options
                .max_rejected
                .check(input.rejected_total, input.lines)
                .map_err(|reason| RunError::Input(format!("{report}\n{}: {reason}", crate::stdio::describe(path, "standard input"))))?;
            Ok(Some((input.partitions, report)))
        }
        (SourceSpec::File { path: None }, None) => {
            Err(RunError::Usage(format!("{}: source.path is not set; pass --input FILE", job.file.display())))
        }
        _ => Ok(None),
    }
}

fn load_input(job: &Job, options: &RunOptions, output: &Output, file: Option<LoadedFile>) -> Result<Input, RunError> {
    let loaded = match (&job.source, file) {
        (_, Some(loaded)) => loaded,
        // load_file_input read every file it was given.
        (SourceSpec::File { .. }, None) => return Err(RunError::Usage(format!("{}: no click file", job.file.display()))),
        (SourceSpec::Generator(config), None) => {
            let config = GeneratorConfig { partitions: job.partitions, ..config.clone() };
            let report = format!("input: {} generated clicks (seed {}), made while the job runs", config.clicks, config.seed);
            return Ok((Readers::Ready(generated::readers(&config, GENERATOR_SALT)), report, config.clicks, None));
        }
        (SourceSpec::Log { dir }, None) => {
            let dir = dir.clone().unwrap_or_else(|| options.data_dir.log());
            let (factory, report, total, range) = open_log(&dir, job, options, output)?;
            return Ok((Readers::Ready(factory), report, total, range));
        }
        (SourceSpec::Kafka { brokers, topic }, None) => {
            let topic = KafkaTopic { brokers: brokers.clone(), topic: topic.clone(), partitions: job.partitions };
            return open_kafka(topic, job, options, output);
        }
    };
    let (partitions, report) = loaded;
    let clicks = partitions.iter().map(|p| p.len() as u64).sum();
    let partitions: Partitions = Arc::new(partitions.into_iter().map(|p| Mutex::new(Some(p))).collect());
    Ok((Readers::Ready(reader_factory(partitions)), report, clicks, None))
}

/// A Kafka topic as the input: created if missing. Partitions without a
/// committed checkpoint start at `--from` (default: the earliest offset
/// Kafka still has); a bounded run stops at `--to` (`--bounded`: the end
/// offsets seen now). Process 0's start and salt are the cluster's.
fn open_kafka(topic: KafkaTopic, job: &Job, options: &RunOptions, output: &Output) -> Result<Input, RunError> {
    topic.ensure()?;
    if let Some(commits) = &options.commits {
        // Without a reader the metrics lack end offsets and lag, nothing else.
        if let Ok(read) = topic.end_offsets_reader() {
            commits.watch_end_offsets(Arc::new(read));
        }
    }
    let (earliest, ends) = topic.bounds()?;
    for (partition, checkpoint) in &output.resume {
        let first = earliest.get(*partition as usize).copied().unwrap_or(0);
        let needed = checkpoint.offset.min(checkpoint.replay_offset);
        if needed < first {
            return Err(RunError::Input(format!(
                "kafka topic {} partition {partition}: the job must read again from offset {needed} (its dedup replay point), but Kafka kept only offsets from {first} on (retention.ms of the topic is shorter than the job's dedup horizon plus its downtime): restore the data, or move the store aside and count anew",
                topic.topic
            )));
        }
    }
    let bounds = LogBounds { earliest: earliest.clone(), ends: ends.clone() };
    let lookup = |time| topic.offsets_at(time, &ends).map_err(String::from);
    let (start, bound, note) = range_of(&bounds, lookup, options, output)?;
    if let Some(note) = note {
        tracing::info!("{note}");
    }
    let total: u64 = ends.iter().zip(&earliest).map(|(e, f)| e - f).sum();
    let mut report = format!("input: kafka topic {} on {}, {} partitions, {total} records", topic.topic, topic.brokers, topic.partitions);
    let reading = bound.as_ref().map(|bound| bounded_reading(bound, &start, output));
    if let (Some(bound), Some(reading)) = (&bound, reading) {
        report.push_str(&format!(" (bounded: reading {reading} of them, up to the end offsets {})", offsets_text(bound)));
    }
    // Process 0 hands its salt to the cluster; the others need none of their own.
    let salt = match options.process {
        0 => Some(options.data_dir.salt().map_err(|e| RunError::Input(format!("salt in {}: {e}", options.data_dir.root.display())))?),
        _ => None,
    };
    let group = format!("tally-{}", job.name);
    Ok((Readers::Kafka { topic, group, ends: bound }, report, total, Some(LogRange { ends, start, salt, reading })))
}

/// Readers over the embedded log from the run's start offsets; bounded ones
/// stop at the `--to` offsets (today's end offsets for `--bounded`).
/// Retention keeps every offset the job reads again: from its committed
/// checkpoints, or before its first commit from its start offsets.
fn open_log(
    dir: &Path,
    job: &Job,
    options: &RunOptions,
    output: &Output,
) -> Result<(ReaderFactory, String, u64, Option<LogRange>), RunError> {
    let partitions = job.partitions;
    let log = match (&options.log, &options.log_view) {
        (Some(log), _) => Some(Arc::clone(log)),
        (None, Some(_)) => None,
        (None, None) => {
            Some(Arc::new(Log::open(dir, partitions, LogOptions { retention_ms: job.log_retention_ms, ..LogOptions::default() })?))
        }
    };
    let view = match (&log, &options.log_view) {
        (Some(log), _) => log.view(),
        (None, view) => view.clone().expect("a view when no log is open"),
    };
    if view.partitions() != partitions {
        let reason = format!("{}: source.partitions is {partitions} but the log has {}", job.file.display(), view.partitions());
        return Err(RunError::Usage(reason));
    }
    let (start, bound, note) = log_range(&view, options, output)?;
    if let Some(note) = note {
        tracing::info!("{note}");
    }
    let needed: Vec<u64> = match output.committed {
        true => (0..partitions).map(|p| output.resume.get(&p).map_or(0, |c| c.offset.min(c.replay_offset))).collect(),
        false => start.clone(),
    };
    let retention = match &log {
        Some(log) => Some(log.enforce_retention(now_ms(), &needed)?),
        None => None,
    };
    if let (Some(log), Some(commits)) = (&log, &options.commits) {
        let log = Arc::clone(log);
        commits.watch_end_offsets(Arc::new(move || Some(log.end_offsets())));
    }
    let ends = view.end_offsets();
    let total: u64 = ends.iter().sum();
    let mut report = format!("input: embedded log {}, {partitions} partitions, {total} clicks", dir.display());
    let reading = bound.as_ref().map(|bound| bounded_reading(bound, &start, output));
    if let (Some(bound), Some(reading)) = (&bound, reading) {
        report.push_str(&format!(" (bounded: reading {reading} of them, up to the end offsets {})", offsets_text(bound)));
    }
    if !output.committed && start.iter().any(|&s| s > 0) {
        report.push_str(&format!("\nstarting at offsets {} (nothing committed yet)", offsets_text(&start)));
    }
    if let Some(retention) = &retention {
        log_retention(retention, job.log_retention_ms, output.committed);
    }
    if let Some(log) = log.as_ref().filter(|log| !log.recovery().is_clean()) {
        tracing::warn!("log recovery: {:?}", log.recovery());
    }
    let readers = view.clone();
    let factory: ReaderFactory = Arc::new(move |p, offset| {
        // The open log (if any) stays locked while readers exist.
        let _owner = &log;
        let reader = readers.reader(p, offset).unwrap_or_else(|e| panic!("log partition {p} at offset {offset}: {e}"));
        Box::new(LogPartitionReader::new(reader, bound.as_ref().map(|b| b[p as usize])))
    });
    let clicks = total;
    Ok((factory, report, clicks, Some(LogRange { ends, start, salt: None, reading })))
}

/// Logs what retention did at the start of the run: a warning when it kept
/// segments old enough to delete because a job that has committed still
/// needs them (its committed or dedup replay offsets lie in them: the job
/// is more than the retention behind, and the log grows until it catches
/// up); before the first commit every segment from the start is needed.
fn log_retention(retention: &Retention, retention_ms: u64, committed: bool) {
    let Some(line) = retention.report(retention_ms) else { return };
    if committed && retention.kept_needed > 0 {
        tracing::warn!("{line}");
    } else {
        tracing::info!("{line}");
    }
}

/// Clicks a bounded run reads: from each partition's committed offset (or
/// its start) up to its bound.
fn bounded_reading(bound: &[u64], start: &[u64], output: &Output) -> u64 {
    let from = |p: usize| output.resume.get(&(p as u32)).map_or(start[p], |c| c.offset);
    bound.iter().enumerate().map(|(p, b)| b.saturating_sub(from(p))).sum()
}

/// `P:OFFSET,...` of every partition.
fn offsets_text(offsets: &[u64]) -> String {
    Position::Offsets((0..).zip(offsets.iter().copied()).collect()).to_string()
}

/// Where a log run starts and, if bounded, ends; and a note when `--from`
/// is ignored. A store with a committed epoch resumes from its checkpoints
/// (`start` then only matters for partitions it never checkpointed, which
/// start at the log's first offset); `--to` must not be behind them.
type Bounds = (Vec<u64>, Option<Vec<u64>>, Option<String>);

fn log_range(view: &LogView, options: &RunOptions, output: &Output) -> Result<Bounds, RunError> {
    let bounds = LogBounds { earliest: view.start_offsets(), ends: view.end_offsets() };
    range_of(&bounds, |time| view.offsets_at_time(time).map_err(|e| e.to_string()), options, output)
}

/// [`log_range`] for any log: its bounds and its lookup of offsets by time.
fn range_of(
    bounds: &LogBounds,
    lookup: impl Fn(EventTime) -> Result<Vec<u64>, String>,
    options: &RunOptions,
    output: &Output,
) -> Result<Bounds, RunError> {
    let bounds = bounds.clone();
    let to = options.to.clone().or(options.bounded.then_some(Position::Latest));
    let usage = |e: PositionError| RunError::Usage(e.to_string());
    if !output.committed {
        let from = options.from.clone().unwrap_or(Position::Earliest);
        return match to {
            Some(to) => resolve_range(&from, &to, &bounds, lookup).map(|r| (r.start, Some(r.end), None)).map_err(usage),
            None => {
                let start = from.resolve(Bound::Start, &bounds, lookup);
                let start = start.map_err(|reason| usage(PositionError { field: "--from", position: from.to_string(), reason }))?;
                Ok((start, None, None))
            }
        };
    }
    let note = options.from.as_ref().map(|from| {
        format!(
            "note: --from {from} is ignored: the store has a committed epoch ({}), and a run resumes from its committed offsets",
            output.resume_epoch
        )
    });
    // A partition the store never checkpointed starts at the store's origin.
    let start = output.origin.clone().unwrap_or_else(|| vec![0; bounds.ends.len()]);
    check_resume_offsets(&output.resume, Some(&bounds.ends))?;
    let Some(to) = to else { return Ok((start, None, note)) };
    let end = to.resolve(Bound::End, &bounds, lookup);
    let end = end.map_err(|reason| usage(PositionError { field: "--to", position: to.to_string(), reason }))?;
    for (&partition, checkpoint) in &output.resume {
        let bound = end.get(partition as usize).copied().unwrap_or(0);
        if bound < checkpoint.offset {
            let reason = format!("partition {partition}: offset {bound} is before the store's committed offset {}", checkpoint.offset);
            return Err(usage(PositionError { field: "--to", position: to.to_string(), reason }));
        }
    }
    Ok((start, Some(end), note))
}

/// The data directory's salt if it has one, so that a file run hashes users
/// as `tally log import` did; else the fixed default of file runs. The
/// processes of a cluster may each have their own data directory (and
/// salt), so a cluster always hashes with the fixed default: one user is
/// one user on every process.
fn file_salt(data_dir: &DataDir, processes: usize) -> UserSalt {
    if processes <= 1 && data_dir.root.join("salt").exists() {
        data_dir.salt().unwrap_or(UserSalt::FILE_DEFAULT)
    } else {
        UserSalt::FILE_DEFAULT
    }
}

/// The catalog, and the stamp of its file that commits record.
fn load_catalog(job: &Job, options: &RunOptions) -> Result<(Option<Catalog>, Option<CatalogStamp>), RunError> {
    if let Some(path) = options.catalog.as_ref().or(job.catalog.as_ref()) {
        let (catalog, bytes) = Catalog::load_with_bytes(path)?;
        return Ok((Some(catalog), Some(CatalogStamp::of(path, &bytes))));
    }
    if let SourceSpec::Generator(config) = &job.source {
        let mut csv = Vec::new();
        write_catalog(config, &mut csv).map_err(|e| RunError::Input(format!("generated catalog: {e}")))?;
        let stamp = CatalogStamp::of(Path::new("(generated)"), &csv);
        return Ok((Some(Catalog::parse(&String::from_utf8_lossy(&csv))?), Some(stamp)));
    }
    Ok((None, None))
}

/// Refuses combinations that cannot stay exact.
///
/// - The embedded log in a cluster: it lives in one process's data
///   directory.
/// - `--leave-open` in a cluster: each process would stop at its own data
///   frontier.
/// - A live (not bounded) embedded-log run into a file or memory sink: the
///   frontier follows the clock once the log is caught up, and a click read
///   after that restates windows whose state only a store keeps.
/// - `--leave-open` without a store: nothing would keep the open windows.
fn check_shape(job: &Job, options: &RunOptions) -> Result<(), RunError> {
    let store = store_sink(job, options);
    let embedded = matches!(job.source, SourceSpec::Log { .. }) && options.input.is_none();
    let log = (embedded || matches!(job.source, SourceSpec::Kafka { .. })) && options.input.is_none();
    if embedded && options.processes > 1 {
        return Err(RunError::Usage(format!(
            "{}: source.kind = \"log\" with --processes {}: the embedded log belongs to one process; run a cluster over Kafka (source.kind = \"kafka\"), or one process with -w workers",
            job.file.display(),
            options.processes
        )));
    }
    if options.leave_open && options.processes > 1 {
        return Err(RunError::Usage(format!("{}: --leave-open runs in one process (-w for more workers)", job.file.display())));
    }
    if log && !options.bounded && options.to.is_none() && !store {
        return Err(RunError::Usage(format!(
            "{}: a live run of a log needs sink.kind = \"store\" or \"cassandra\" (or pass --bounded)",
            job.file.display()
        )));
    }
    let positions = options.from.is_some() || options.to.is_some();
    if positions && !log {
        return Err(RunError::Usage(format!(
            "{}: --from and --to are places in a log: they need source.kind = \"log\" or \"kafka\"",
            job.file.display()
        )));
    }
    if options.leave_open && !store {
        return Err(RunError::Usage(format!(
            "{}: --leave-open keeps windows open in the store: it needs sink.kind = \"store\" or \"cassandra\"",
            job.file.display()
        )));
    }
    Ok(())
}

/// Whether the job commits to a store (embedded or Cassandra).
fn store_sink(job: &Job, options: &RunOptions) -> bool {
    matches!(job.sink, SinkSpec::Store | SinkSpec::Cassandra(_)) && options.output.is_none()
}

/// A committed offset beyond the log's end means the store was committed
/// from another log, or the log lost data: resuming would skip clicks.
fn check_resume_offsets(resume: &BTreeMap<u32, Checkpoint>, ends: Option<&[u64]>) -> Result<(), RunError> {
    let Some(ends) = ends else { return Ok(()) };
    for (partition, checkpoint) in resume {
        let end = ends.get(*partition as usize).copied().unwrap_or(0);
        if checkpoint.offset > end {
            return Err(RunError::Input(format!(
                "log partition {partition}: the store's committed offset {} is beyond the log's end offset {end}: the store was committed from another log, or the log lost data (restore the log, or move the store aside to recount this log)",
                checkpoint.offset
            )));
        }
    }
    Ok(())
}

fn attribution(job: &Job, catalog: Option<&Catalog>) -> Attribution {
    let intervals = catalog.map(Catalog::intervals).unwrap_or_default();
    let mut ads: Vec<Key> = intervals.iter().map(|(ad, _)| ad.clone()).collect();
    ads.dedup();
    Attribution { intervals, ads, group_by: job.group_by.clone() }
}

/// The job's one sink, handed to worker 0.
type SharedSink = Arc<Mutex<Option<Box<dyn Sink + Send>>>>;

/// The sink and, for the store, what the job resumes from.
struct Output {
    sink: SharedSink,
    memory: Option<MemorySink>,
    resume: BTreeMap<u32, Checkpoint>,
    resume_epoch: u64,
    restored: RestoredWindows,
    resumed: String,
    committed_windows: Option<Arc<dyn CommittedWindows>>,
    /// Whether the store has a committed epoch (the run resumes).
    committed: bool,
    /// The generation this run began in the store (0 without one).
    generation: u64,
    /// The origin the store recorded, if it has a commit and records one.
    origin: Option<Vec<u64>>,
    /// The store, the generation this run began and the settings its sink
    /// commits, until the run knows its origin ([`Output::open_store_sink`]).
    store: Option<(Box<dyn EpochStore + Send>, u64, RunSettings)>,
}

impl Output {
    /// `sink`, without a store to resume from. A process of a store cluster
    /// other than process 0 has no sink at all: it never commits (worker 0
    /// does) and gets its start from process 0.
    fn empty(sink: SharedSink) -> Output {
        Output {
            sink,
            memory: None,
            resume: BTreeMap::new(),
            resume_epoch: 0,
            restored: Default::default(),
            resumed: String::new(),
            committed_windows: None,
            committed: false,
            generation: 0,
            origin: None,
            store: None,
        }
    }

    /// Makes the store sink, once the run's start offsets are known: a store
    /// without a committed epoch records them as its origin with its first
    /// commit (a source that is not the log starts at offset 0).
    fn open_store_sink(&mut self, partitions: u32, start: &[u64]) -> Result<(), RunError> {
        let Some((store, generation, settings)) = self.store.take() else { return Ok(()) };
        let origin = match (self.committed, start.is_empty()) {
            (true, _) => None,
            (false, true) => Some(Origin::zero(partitions)),
            (false, false) => Some(Origin { offsets: start.to_vec() }),
        };
        self.sink = Arc::new(Mutex::new(Some(Box::new(StoreSink::new(store, generation, settings, origin, Fault::from_env())))));
        Ok(())
    }
}

fn sink(job: &Job, options: &RunOptions, settings: RunSettings, catalog: Option<&Catalog>) -> Result<Output, RunError> {
    let shared = |sink: Box<dyn Sink + Send>| Arc::new(Mutex::new(Some(sink)));
    let mut output = Output::empty(shared(Box::<MemorySink>::default()));
    match (&options.output, &job.sink) {
        (Some(path), _) | (None, SinkSpec::File { path: Some(path) }) => {
            let sink = FileSink::create(path, options.late.as_deref()).map_err(|e| RunError::Sink(e.to_string()))?;
            output.sink = shared(Box::new(sink));
        }
        (None, SinkSpec::File { path: None }) => {
            return Err(RunError::Usage(format!("{}: sink.path is not set; pass --output FILE", job.file.display())))
        }
        (None, SinkSpec::Memory) => {
            let memory = MemorySink::default();
            output.sink = shared(Box::new(memory.handle()));
            output.memory = Some(memory);
        }
        (None, SinkSpec::Store) => {
            let given = options.store.as_ref().and_then(|shared| shared.lock().unwrap_or_else(|e| e.into_inner()).take());
            let mut store = match given {
                Some(store) => store,
                None => {
                    options
                        .data_dir
                        .create()
                        .map_err(|source| crate::store::StoreError::Io { path: options.data_dir.root.clone(), source })?;
                    EmbeddedStore::open(&options.data_dir.store())?
                }
            };
            let swept = store.sweep(now_ms().saturating_sub(job.rows_retention_ms))?;
            if swept > 0 {
                output.resumed.push_str(&format!("\nstore retention: swept {swept} rows, versions and ledger entries"));
            }
            let reader = Box::new(store.reader());
            let target = StoreTarget {
                name: format!("the store in {}", options.data_dir.store().display()),
                anew: format!("move {} aside (the log stays) and run the job again", options.data_dir.store().display()),
            };
            output.take_over(Box::new(store), reader, job, settings, &target)?;
        }
        (None, SinkSpec::Cassandra(config)) => {
            let store = CassandraStore::open(config, &job.name, job.rows_retention_ms, Faults::from_env())?;
            let reader = Box::new(store.reader());
            let target = StoreTarget {
                name: format!("job {} in Cassandra keyspace {}", job.name, config.keyspace),
                anew: format!("give the job another name (the store keys everything by it), or drop the keyspace {}", config.keyspace),
            };
            // Readers attribute with the catalog the committed settings
            // name; one published for a run refused below is never named.
            if let Some((catalog, stamp)) = catalog.zip(settings.catalog.as_ref()) {
                if store.publish_catalog(stamp, catalog)? {
                    output.resumed += &format!("\npublished catalog {} ({}) to Cassandra", stamp.path, stamp.fingerprint);
                }
            }
            output.take_over(Box::new(store), reader, job, settings, &target)?;
        }
    }
    Ok(output)
}

/// How messages name a store, and how to count anew in it.
struct StoreTarget {
    name: String,
    anew: String,
}

impl Output {
    /// Begins a new generation of `store` (fencing every older one), then
    /// resumes from its last committed epoch, if any.
    fn take_over(
        &mut self,
        mut store: Box<dyn EpochStore + Send>,
        reader: Box<dyn StoreReader>,
        job: &Job,
        settings: RunSettings,
        target: &StoreTarget,
    ) -> Result<(), RunError> {
        let generation = store.begin_generation()?;
        self.generation = generation;
        // The workers that own windows read final windows' sketches back
        // from the store, so they are neither restored nor kept in memory.
        // In a cluster they all run in this process (`Plan::window_workers`),
        // or with Cassandra, the other processes read their own windows
        // ([`ClusterRestore`]).
        if let Some(recovered) = store.last_committed()? {
            check_settings(job, target, &recovered, &settings)?;
            let (resume, restored) = crate::sink::store::resume(&recovered)?;
            self.resumed += &format!(
                "\nresuming from epoch {} (generation {}): {} partitions, {} windows, {} pending late partials",
                recovered.epoch,
                recovered.generation,
                resume.len(),
                restored.windows.len(),
                restored.pending.len()
            );
            self.resume = resume;
            self.resume_epoch = recovered.epoch;
            self.restored = restored;
            self.committed = true;
            self.origin = recorded_origin(&recovered)?;
        }
        self.committed_windows = Some(Arc::new(StoreWindows::new(reader, generation, &job.windows_ms)?));
        self.store = Some((store, generation, settings));
        Ok(())
    }
}

/// The origin a recovered store recorded with its first commit.
fn recorded_origin(recovered: &Recovered) -> Result<Option<Vec<u64>>, RunError> {
    let Some((_, bytes)) = recovered.state.iter().find(|(key, _)| key.as_slice() == ORIGIN_KEY) else { return Ok(None) };
    Origin::from_json(bytes).map(|origin| Some(origin.offsets)).map_err(RunError::Sink)
}

/// Refuses settings that would count the committed log differently.
fn check_settings(job: &Job, target: &StoreTarget, recovered: &Recovered, settings: &RunSettings) -> Result<(), RunError> {
    let Some((_, bytes)) = recovered.state.iter().find(|(key, _)| key.as_slice() == SETTINGS_KEY) else {
        return Ok(());
    };
    let stored = RunSettings::from_json(bytes).map_err(RunError::Sink)?;
    match settings.incompatible_with(&stored) {
        None => Ok(()),
        Some(change) => Err(RunError::Usage(format!(
            "{}: key '{}' is {} but {} was committed with {}: committed windows, offsets and dedup replay points follow the old setting. Keep it, or count the log anew under the new one: {}",
            job.file.display(),
            change.key,
            change.given,
            target.name,
            change.stored,
            target.anew,
        ))),
    }
}

fn reader_factory(partitions: Partitions) -> ReaderFactory {
    Arc::new(move |p, offset| {
        let clicks = partitions[p as usize].lock().unwrap_or_else(|e| e.into_inner()).take().unwrap_or_default();
        Box::new(VecReader::new(clicks, offset))
    })
}

pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// The wall clock, in ms since the Unix epoch.
pub fn system_clock() -> Clock {
    Arc::new(|| SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0))
}

fn plan(job: &Job, readers: ReaderFactory, attribution: Arc<Attribution>, stats: Arc<SourceStats>, errors: dataflow::CommitErrors) -> Plan {
    let restate_within_ms = job.late.restate_within_ms();
    let rules = TimeRules {
        epoch_ms: job.epoch_ms,
        slack_ms: job.slack_ms,
        allowed_lateness_ms: job.allowed_lateness_ms,
        dedup_horizon_ms: job.dedup_horizon_ms,
        restate_within_ms,
    };
    let clock = system_clock();
    Plan {
        source: SourceSettings {
            partitions: job.partitions,
            rules,
            distinct_users: job.distinct_users,
            readers,
            clock: Arc::clone(&clock),
            stats,
            resume: Default::default(),
            start: Default::default(),
            resume_epoch: 0,
            leave_open: false,
            finish: Default::default(),
        },
        attribution,
        windows: WindowRules {
            windows_ms: job.windows_ms.clone(),
            allowed_lateness_ms: job.allowed_lateness_ms,
            restate_within_ms,
            keep_state: true,
        },
        early_results_ms: job.early_results_ms,
        clock,
        errors,
        commit_lock: Default::default(),
        restored: Default::default(),
        committed_windows: None,
        window_workers: None,
    }
}

/// On SIGINT or SIGTERM: [`stop_cleanly`]. What was committed is durable;
/// the epoch in progress was not, and a restart reads it again from the
/// committed offsets.
fn stop_cleanly_on_signal(lock: dataflow::CommitLock) -> Result<(), RunError> {
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, Arc::clone(&stop)).map_err(|e| RunError::Usage(format!("signal handler: {e}")))?;
    }
    RUNNING.lock().unwrap_or_else(|e| e.into_inner()).push(lock);
    std::thread::spawn(move || loop {
        if stop.load(std::sync::atomic::Ordering::SeqCst) {
            stop_cleanly();
        }
        std::thread::sleep(Duration::from_millis(20));
    });
    Ok(())
}

/// The commit locks of the runs in this process, for [`stop_cleanly`].
static RUNNING: Mutex<Vec<dataflow::CommitLock>> = Mutex::new(Vec::new());

/// Ends the process after a stop request: waits for every run's commit in
/// flight and keeps the next one from starting, closes every embedded store
/// of the process cleanly (so that `export` and `verify` open it without a
/// repair), and exits 0. Callers racing it wait for its exit.
pub fn stop_cleanly() -> ! {
    let running = RUNNING.lock().unwrap_or_else(|e| e.into_inner());
    let _no_commit_in_flight: Vec<_> = running.iter().map(|lock| lock.lock().unwrap_or_else(|e| e.into_inner())).collect();
    match crate::store::embedded::close_all() {
        Ok(_) => tracing::info!("stopped by signal: every committed epoch is durable; the epoch in progress is read again on restart"),
        Err(error) => tracing::error!("stopped by signal: every committed epoch is durable, but closing the store failed: {error}"),
    }
    std::process::exit(0);
}
