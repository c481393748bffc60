//! The `tally` command line.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Args, Parser, Subcommand};

use tally::datadir::DataDir;
use tally::job;
use tally::run::{run, RunOptions, RunReport};
use tally::sources::generator::{write_catalog, write_ndjson, GeneratorConfig};
use tally::sources::position::Position;
use tally::store::cassandra::CassandraVersions;
use tally::store::{versions, StoreReader};
use tally::telemetry::{serve_metrics, CommitStats, SourceStats, Telemetry};

#[derive(Parser)]
#[command(name = "tally", version, about = "Exactly-once ad click aggregation on Timely Dataflow")]
struct Cli {
    /// Where the embedded log, store and salt live.
    #[arg(long, global = true, default_value = tally::datadir::DEFAULT_DATA_DIR)]
    data_dir: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Compile a job file into a Timely dataflow and run it.
    Run(RunArgs),
    /// Write seeded synthetic clicks (NDJSON) and a matching catalog (CSV).
    Gen(GenArgs),
    /// The embedded log.
    #[command(subcommand)]
    Log(LogCommand),
    /// Write the committed rows of the job's store (embedded or Cassandra) as NDJSON.
    Export(ExportArgs),
    /// Recount the log independently of the dataflow and compare it with the
    /// committed windows and late ledger; exit 0 only without mismatches.
    Verify(VerifyArgs),
    /// Serve the HTTP ingest API in front of the embedded log.
    Ingest(IngestArgs),
    /// Ingest, the job, the query API and the dashboard on the embedded log
    /// (or Kafka) and store (or Cassandra), in one process.
    Up(UpArgs),
    /// Re-aggregate a range of the log into a new version of the output
    /// (in the embedded store, or in Cassandra for a Cassandra job), beside
    /// the live job.
    Backfill(BackfillArgs),
    /// List the versions of the output; `versions delete NAME` deletes one.
    Versions(VersionsArgs),
    /// Serve version NAME (`live`: the job's store) in the query API and
    /// `tally export`, atomically.
    Switch(SwitchArgs),
}

#[derive(Args)]
struct BackfillArgs {
    /// The job to run over the range (source.kind = "log").
    job: PathBuf,
    /// Start of the range: earliest, latest, a time (unix ms or RFC 3339), or P:OFFSET,...
    #[arg(long, value_name = "POS", default_value = "earliest")]
    from: String,
    /// End of the range (exclusive), as --from.
    #[arg(long, value_name = "POS", default_value = "latest")]
    to: String,
    /// Name of the new version (letters, digits, '.', '_', '-'; not "live").
    #[arg(long, value_name = "NAME")]
    version: String,
    /// Build the version again if it exists (never the serving one).
    #[arg(long)]
    replace: bool,
    /// Worker threads.
    #[arg(short = 'w', long = "workers", default_value_t = 1)]
    workers: usize,
    /// Ad catalog CSV; overrides the job's.
    #[arg(long)]
    catalog: Option<PathBuf>,
    /// Kafka bootstrap servers (host:port,...); overrides the job's source.brokers.
    #[arg(long)]
    brokers: Option<String>,
    /// Cassandra contact points (host:port,...); overrides the job's sink.hosts.
    #[arg(long, value_name = "HOSTS")]
    cassandra: Option<String>,
}

#[derive(Args)]
struct VersionsArgs {
    #[command(subcommand)]
    command: Option<VersionsCommand>,
    #[command(flatten)]
    target: VersionsTarget,
}

/// Whose versions: the embedded store's in the data directory, or a
/// Cassandra job's.
#[derive(Args)]
struct VersionsTarget {
    /// The job file of a job with sink.kind = "cassandra", whose versions
    /// live in its keyspace (without it: the embedded store's).
    #[arg(long, value_name = "JOB", global = true)]
    job: Option<PathBuf>,
    /// Cassandra contact points (host:port,...); overrides the job's sink.hosts.
    #[arg(long, value_name = "HOSTS", global = true)]
    cassandra: Option<String>,
}

#[derive(Subcommand)]
enum VersionsCommand {
    /// Delete a version (never `live`, never the serving one).
    Delete {
        /// The version to delete.
        name: String,
    },
}

#[derive(Args)]
struct SwitchArgs {
    /// The version to serve (`live`: the job's store).
    name: String,
    #[command(flatten)]
    target: VersionsTarget,
}

#[derive(Args)]
struct ServiceArgs {
    /// Ingest config file (TOML; every key in jobs/ingest.example.toml).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Listen address; overrides the config's `addr`.
    #[arg(long)]
    addr: Option<std::net::SocketAddr>,
    /// Accept unsigned requests: for local use only (overrides auth.signatures).
    #[arg(long)]
    no_auth: bool,
    /// Redis URL of the duplicate pre-filter; overrides the config's redis.url.
    #[arg(long)]
    redis: Option<String>,
    /// Write clicks to Kafka (bootstrap servers host:port,...) instead of
    /// the embedded log: idempotent producer, acks=all, 202 after delivery.
    #[arg(long, value_name = "BROKERS")]
    kafka: Option<String>,
    /// The Kafka topic, with --kafka.
    #[arg(long, default_value = tally::job::DEFAULT_KAFKA_TOPIC, requires = "kafka")]
    topic: String,
}

/// `--kafka` and `--topic`, checked.
fn kafka_target(args: &ServiceArgs) -> Result<Option<tally::up::KafkaTarget>, i32> {
    let Some(brokers) = &args.kafka else { return Ok(None) };
    let checked = tally::job::check_brokers(brokers).and_then(|()| tally::job::check_topic(&args.topic));
    match checked {
        Ok(()) => Ok(Some(tally::up::KafkaTarget { brokers: brokers.clone(), topic: args.topic.clone() })),
        Err(reason) => {
            eprintln!("error: --kafka/--topic: {reason}");
            Err(2)
        }
    }
}

#[derive(Args)]
struct IngestArgs {
    #[command(flatten)]
    service: ServiceArgs,
}

#[derive(Args)]
struct UpArgs {
    #[command(flatten)]
    service: ServiceArgs,
    /// The job to run (source: log, sink: store or cassandra); default: the
    /// built-in jobs/embedded.toml, or jobs/cassandra.toml with --cassandra.
    #[arg(long)]
    job: Option<PathBuf>,
    /// Commit to Cassandra (contact points host:port,...) and serve the
    /// query API from it: the job's sink.hosts (default job:
    /// jobs/cassandra.toml, keyspace tally).
    #[arg(long, value_name = "HOSTS")]
    cassandra: Option<String>,
    /// Worker threads of the job.
    #[arg(short = 'w', long = "workers", default_value_t = 1)]
    workers: usize,
    /// Ad catalog CSV of the job (ad_id,campaign_id,advertiser_id[,valid_from]).
    #[arg(long)]
    catalog: Option<PathBuf>,
    /// Also post generated clicks (200 ads, one viral) to the ingest API, ~2,000/s.
    #[arg(long)]
    demo: bool,
}

#[derive(Args)]
struct VerifyArgs {
    /// The job whose committed rows to check.
    job: PathBuf,
    /// Ad catalog CSV; overrides the job's. Must be the catalog the store's
    /// last commit was made with.
    #[arg(long)]
    catalog: Option<PathBuf>,
    /// List the first N mismatches in full (0: only the counts).
    #[arg(long, value_name = "N", default_value_t = tally::verify::SUMMARY_MISMATCH_LINES)]
    show: usize,
    /// Kafka bootstrap servers (host:port,...); overrides the job's source.brokers.
    #[arg(long)]
    brokers: Option<String>,
    /// Cassandra contact points (host:port,...); overrides the job's sink.hosts.
    #[arg(long, value_name = "HOSTS")]
    cassandra: Option<String>,
    /// The version of the output to check (default: live, the job's store).
    #[arg(long, value_name = "NAME", default_value = tally::store::versions::LIVE)]
    version: String,
}

#[derive(Subcommand)]
enum LogCommand {
    /// Append NDJSON clicks to the embedded log (validated, user ids hashed).
    Import(ImportArgs),
}

#[derive(Args)]
struct ImportArgs {
    /// NDJSON click file ("-" for stdin).
    file: PathBuf,
    /// Log partitions, when the log is created (default: the default job's).
    #[arg(long, default_value_t = 8)]
    partitions: u32,
}

#[derive(Args)]
struct ExportArgs {
    /// The job file (names the store's job; rows come from the data directory).
    job: PathBuf,
    /// Where to write the rows.
    #[arg(long)]
    output: PathBuf,
    /// Where to write the late ledger too (NDJSON, as `rows.late.ndjson`).
    #[arg(long)]
    late: Option<PathBuf>,
    /// The version of the output to export (default: the one serving).
    #[arg(long, value_name = "NAME")]
    version: Option<String>,
    /// Cassandra contact points (host:port,...); overrides the job's sink.hosts.
    #[arg(long, value_name = "HOSTS")]
    cassandra: Option<String>,
}

#[derive(Args)]
struct RunArgs {
    /// The job file (e.g. jobs/clicks.toml).
    job: PathBuf,
    /// Click NDJSON file; overrides the job's source.
    #[arg(long)]
    input: Option<PathBuf>,
    /// Ad catalog CSV (ad_id,campaign_id,advertiser_id[,valid_from]); overrides the job's.
    #[arg(long)]
    catalog: Option<PathBuf>,
    /// Rows NDJSON file; overrides the job's sink. The late ledger goes next to it.
    #[arg(long)]
    output: Option<PathBuf>,
    /// Worker threads in this process.
    #[arg(short = 'w', long = "workers", default_value_t = 1)]
    workers: usize,
    /// Processes in the cluster.
    #[arg(long, default_value_t = 1)]
    processes: usize,
    /// Index of this process in the cluster.
    #[arg(long, default_value_t = 0)]
    process: usize,
    /// One host:port per process, in process order.
    #[arg(long)]
    hostfile: Option<PathBuf>,
    /// Read the log up to the end offsets seen at start, finalize, commit,
    /// exit (--to latest).
    #[arg(long, conflicts_with = "to")]
    bounded: bool,
    /// With --bounded or --to: commit at the data frontier and leave later
    /// windows open for the next run, instead of finalizing every window.
    #[arg(long)]
    leave_open: bool,
    /// Kafka bootstrap servers (host:port,...); overrides the job's source.brokers.
    #[arg(long)]
    brokers: Option<String>,
    /// Cassandra contact points (host:port,...); overrides the job's sink.hosts.
    #[arg(long, value_name = "HOSTS")]
    cassandra: Option<String>,
    /// In a cluster: seconds without progress before this process takes a
    /// peer for gone and stops (fail-stop; the supervisor restarts all).
    #[arg(long, default_value_t = 60)]
    peer_timeout: u64,
    /// Where to start reading the log when the store has no committed epoch:
    /// earliest (default), latest, a time (unix ms or RFC 3339: the first
    /// offset of each partition whose click time is at or after it), or
    /// P:OFFSET,... Ignored, with a note, when the store has one.
    #[arg(long, value_name = "POS")]
    from: Option<String>,
    /// Read the log up to here (exclusive), finalize, commit, exit; as --from.
    #[arg(long, value_name = "POS")]
    to: Option<String>,
    /// Serve the job's figures on GET /metrics (Prometheus text format) at
    /// this address while it runs, e.g. 127.0.0.1:9464.
    #[arg(long, value_name = "ADDR")]
    metrics_addr: Option<std::net::SocketAddr>,
}

#[derive(Args)]
struct GenArgs {
    /// Where to write the clicks ("-" for stdout).
    #[arg(long, default_value = "-")]
    output: PathBuf,
    /// Where to write the matching catalog CSV.
    #[arg(long)]
    catalog: Option<PathBuf>,
    #[arg(long)]
    seed: Option<u64>,
    #[arg(long)]
    clicks: Option<u64>,
    #[arg(long)]
    ads: Option<u32>,
    #[arg(long)]
    campaigns: Option<u32>,
    #[arg(long)]
    advertisers: Option<u32>,
    #[arg(long)]
    users: Option<u64>,
    /// Share of clicks on the viral ad (0..1).
    #[arg(long)]
    viral_share: Option<f64>,
    /// Share of clicks retried with the same request id (0..1).
    #[arg(long)]
    duplicate_rate: Option<f64>,
    /// Out-of-order jitter of event time, ms.
    #[arg(long)]
    jitter_ms: Option<u64>,
    /// Share of clicks beyond allowed lateness (0..1).
    #[arg(long)]
    too_late_share: Option<f64>,
    /// Partitions of the target log (for idle partitions).
    #[arg(long)]
    partitions: Option<u32>,
    /// Partitions left idle in stretches.
    #[arg(long)]
    idle_partitions: Option<u32>,
    /// Event-time rate, clicks per second.
    #[arg(long)]
    rate_per_s: Option<u64>,
    /// Event time of the first click, ms since the Unix epoch.
    #[arg(long)]
    start_ms: Option<u64>,
}

fn main() -> ExitCode {
    fail_stop_on_panic();
    let cli = Cli::parse();
    let data_dir = DataDir::new(&cli.data_dir);
    let code = match cli.command {
        Command::Run(args) => run_job(args, data_dir),
        Command::Gen(args) => generate(args),
        Command::Log(LogCommand::Import(args)) => import(args, &data_dir),
        Command::Export(args) => export(args, &data_dir),
        Command::Verify(args) => verify(args, &data_dir),
        Command::Ingest(args) => service_config(&args.service)
            .and_then(|config| Ok((config, kafka_target(&args.service)?)))
            .and_then(|(config, kafka)| ingest(&config, &data_dir, kafka.as_ref()))
            .unwrap_or_else(|code| code),
        Command::Up(args) => up(args, &data_dir),
        Command::Backfill(args) => backfill(args, &data_dir),
        Command::Versions(args) => versions(args, &data_dir),
        Command::Switch(args) => switch(&args.name, &args.target, &data_dir),
    };
    ExitCode::from(code as u8)
}

/// A panic in any worker thread ends the whole process at once, so a job
/// never limps on with a dead worker (the cluster is fail-stop); a restart
/// resumes from the last committed epoch.
fn fail_stop_on_panic() {
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        report(info);
        std::process::exit(101);
    }));
}

fn run_job(args: RunArgs, data_dir: DataDir) -> i32 {
    let job = job::load(&args.job).and_then(|job| job::with_brokers(job, args.brokers.as_deref()));
    let job = match job.and_then(|job| job::with_cassandra(job, args.cassandra.as_deref())) {
        Ok(job) => job,
        Err(error) => {
            eprintln!("error: {error}");
            return error.exit_code();
        }
    };
    let positions = (|| -> Result<_, String> {
        let parse = |field: &str, text: &Option<String>| -> Result<Option<Position>, String> {
            text.as_deref().map(|t| t.parse().map_err(|reason| format!("{field} {t}: {reason}"))).transpose()
        };
        if args.leave_open && !args.bounded && args.to.is_none() {
            return Err("--leave-open: it needs --bounded or --to".to_owned());
        }
        Ok((parse("--from", &args.from)?, parse("--to", &args.to)?))
    })();
    let (from, to) = match positions {
        Ok(positions) => positions,
        Err(error) => {
            eprintln!("error: {error}");
            return 2;
        }
    };
    let (stats, commits) = (Arc::new(SourceStats::default()), Arc::new(CommitStats::default()));
    if let Some(addr) = args.metrics_addr {
        let served = Telemetry::new()
            .with_job(Arc::clone(&stats), Arc::clone(&commits))
            .map_err(|e| format!("metrics: {e}"))
            .and_then(|telemetry| serve_metrics(addr, Arc::new(telemetry)));
        match served {
            Ok(bound) => eprintln!("metrics: http://{bound}/metrics"),
            Err(error) => {
                eprintln!("error: {error}");
                return 2;
            }
        }
    }
    let options = RunOptions {
        from,
        to,
        log_view: None,
        workers: args.workers,
        processes: args.processes,
        process: args.process,
        hostfile: args.hostfile,
        input: args.input,
        catalog: args.catalog,
        output: args.output,
        data_dir,
        bounded: args.bounded,
        leave_open: args.leave_open,
        log: None,
        store: None,
        stats: Some(stats),
        commits: Some(commits),
        peer_timeout: Some(std::time::Duration::from_secs(args.peer_timeout.max(1))),
    };
    match run(&job, &options) {
        Ok(report) => {
            print_report(&report, args.workers);
            0
        }
        Err(error) => {
            eprintln!("error: {error}");
            error.exit_code()
        }
    }
}

fn print_report(report: &RunReport, workers: usize) {
    let s = report.stats;
    let secs = report.elapsed.as_secs_f64();
    eprintln!("{}", report.input);
    eprintln!(
        "read {} clicks: {} on time, {} duplicates, {} too late ({} restating, {} held)",
        s.read_total(),
        s.on_time,
        s.duplicates,
        s.restating + s.held,
        s.restating,
        s.held
    );
    if !report.unknown_ads.is_empty() {
        let shown: Vec<&str> = report.unknown_ads.iter().take(10).map(|k| k.as_str()).collect();
        eprintln!(
            "unknown ads: {} ads without a catalog version for their window, {} clicks counted under campaign/advertiser \"unknown\" (first: {})",
            report.unknown_ads.len(),
            s.unknown_ad_clicks,
            shown.join(", ")
        );
    }
    eprintln!(
        "done in {:.2} s with {} workers: {:.0} clicks/s, dedup memory at most {} ids (all partitions)",
        secs,
        workers,
        s.read_total() as f64 / secs.max(1e-9),
        s.remembered_max
    );
}

fn generate(args: GenArgs) -> i32 {
    let d = GeneratorConfig::default();
    let config = GeneratorConfig {
        seed: args.seed.unwrap_or(d.seed),
        clicks: args.clicks.unwrap_or(d.clicks),
        ads: args.ads.unwrap_or(d.ads),
        campaigns: args.campaigns.unwrap_or(d.campaigns),
        advertisers: args.advertisers.unwrap_or(d.advertisers),
        users: args.users.unwrap_or(d.users),
        viral_share: args.viral_share.unwrap_or(d.viral_share),
        duplicate_rate: args.duplicate_rate.unwrap_or(d.duplicate_rate),
        jitter_ms: args.jitter_ms.unwrap_or(d.jitter_ms),
        too_late_share: args.too_late_share.unwrap_or(d.too_late_share),
        partitions: args.partitions.unwrap_or(d.partitions),
        idle_partitions: args.idle_partitions.unwrap_or(d.idle_partitions),
        rate_per_s: args.rate_per_s.unwrap_or(d.rate_per_s),
        start_ms: args.start_ms.unwrap_or(d.start_ms),
        ..d
    };
    if let Err(reason) = config.validate() {
        eprintln!("error: tally gen: {reason}");
        return 2;
    }
    match write_outputs(&config, &args.output, args.catalog.as_ref()) {
        Ok(lines) => {
            eprintln!("wrote {lines} clicks");
            0
        }
        Err(error) => {
            eprintln!("error: tally gen: {error}");
            1
        }
    }
}

fn write_outputs(config: &GeneratorConfig, output: &PathBuf, catalog: Option<&PathBuf>) -> std::io::Result<u64> {
    use std::io::Write;
    let lines = if output.as_os_str() == "-" {
        let stdout = std::io::stdout();
        let mut out = std::io::BufWriter::new(stdout.lock());
        let lines = write_ndjson(config, &mut out)?;
        out.flush()?;
        lines
    } else {
        let mut out = std::io::BufWriter::new(std::fs::File::create(output)?);
        let lines = write_ndjson(config, &mut out)?;
        out.flush()?;
        lines
    };
    if let Some(path) = catalog {
        let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
        write_catalog(config, &mut out)?;
        out.flush()?;
    }
    Ok(lines)
}

/// The ingest config: the file's (or the defaults), then the flags.
fn service_config(args: &ServiceArgs) -> Result<tally::ingest::config::IngestConfig, i32> {
    let mut config = match &args.config {
        Some(path) => tally::ingest::config::load(path).map_err(|error| {
            eprintln!("error: {error}");
            error.exit_code()
        })?,
        None => tally::ingest::config::IngestConfig::defaults(),
    };
    if let Some(addr) = args.addr {
        config.addr = addr;
    }
    if args.no_auth {
        config.auth = tally::ingest::config::Auth::Off;
    }
    if let Some(url) = &args.redis {
        let redis = config.redis.take().unwrap_or(tally::ingest::config::RedisConfig {
            url: String::new(),
            horizon_ms: None,
            timeout_ms: tally::ingest::config::DEFAULT_REDIS_TIMEOUT_MS,
        });
        config.redis = Some(tally::ingest::config::RedisConfig { url: url.clone(), ..redis });
    }
    Ok(config)
}

fn ingest(config: &tally::ingest::config::IngestConfig, data_dir: &DataDir, kafka: Option<&tally::up::KafkaTarget>) -> Result<i32, i32> {
    tally::up::ingest(config, data_dir, kafka).map(|()| 0).map_err(|error| {
        eprintln!("error: tally ingest: {error}");
        2
    })
}

fn up(args: UpArgs, data_dir: &DataDir) -> i32 {
    let config = match service_config(&args.service) {
        Ok(config) => config,
        Err(code) => return code,
    };
    let job = match tally::up::up_job(args.job.as_deref(), args.cassandra.as_deref()) {
        Ok(job) => job,
        Err(error) => {
            eprintln!("error: {error}");
            return error.exit_code();
        }
    };
    let kafka = match kafka_target(&args.service) {
        Ok(kafka) => kafka,
        Err(code) => return code,
    };
    let options = tally::up::UpOptions { workers: args.workers, catalog: args.catalog, demo: args.demo, kafka };
    match tally::up::up(&config, data_dir, &job, &options) {
        Ok(()) => 0,
        Err(error) => {
            eprintln!("error: tally up: {error}");
            2
        }
    }
}

fn import(args: ImportArgs, data_dir: &DataDir) -> i32 {
    let result = (|| -> Result<tally::ingest::ImportReport, String> {
        let salt = data_dir.salt().map_err(|e| format!("salt in {}: {e}", data_dir.root.display()))?;
        let log = tally::log::Log::open(&data_dir.log(), args.partitions, Default::default()).map_err(|e| e.to_string())?;
        let input: Box<dyn std::io::BufRead> = if args.file.as_os_str() == "-" {
            Box::new(std::io::BufReader::new(std::io::stdin()))
        } else {
            let file = std::fs::File::open(&args.file).map_err(|e| format!("{}: {e}", args.file.display()))?;
            Box::new(std::io::BufReader::with_capacity(1 << 20, file))
        };
        // No retention here: it runs where the job runs, with its offsets.
        tally::ingest::import(input, &log, &salt).map_err(|e| e.to_string())
    })();
    match result {
        Ok(report) => {
            println!("appended {} clicks, rejected {} lines (of {})", report.appended, report.rejected_total, report.lines);
            for rejected in report.rejected.iter().take(10) {
                eprintln!("  line {}: {}", rejected.line, rejected.error);
            }
            0
        }
        Err(error) => {
            eprintln!("error: tally log import: {error}");
            if error.contains("cannot read") || error.contains("No such file") {
                2
            } else {
                1
            }
        }
    }
}

/// The store a job's committed epochs are read from: version `name`
/// (default: the serving one) in its Cassandra keyspace, or of the
/// embedded store. `Err` holds the message and the exit code.
fn open_reader(job: &job::Job, data_dir: &DataDir, name: Option<&str>) -> Result<Box<dyn StoreReader>, (String, i32)> {
    if let job::SinkSpec::Cassandra(config) = &job.sink {
        let reader = CassandraVersions::open(config, &job.name).and_then(|versions| match name {
            Some(name) => versions.reader(name),
            None => versions.serving_reader().map(|(_, reader)| reader),
        });
        return reader.map(|r| Box::new(r) as Box<dyn StoreReader>).map_err(|e| {
            let code = if e.is_usage() { 2 } else { 1 };
            (e.to_string(), code)
        });
    }
    let name = match name {
        Some(name) => Ok(name.to_owned()),
        None => versions::serving(data_dir),
    };
    // Opening the store repairs it first if a crashed job left it and no
    // job holds it now.
    match name.and_then(|name| versions::open(data_dir, &name)) {
        Ok(reader) => Ok(Box::new(reader)),
        Err(error) => Err((error.to_string(), if error.is_usage() { 2 } else { 1 })),
    }
}

fn export(args: ExportArgs, data_dir: &DataDir) -> i32 {
    let job = match job::load(&args.job).and_then(|job| job::with_cassandra(job, args.cassandra.as_deref())) {
        Ok(job) => job,
        Err(error) => {
            eprintln!("error: {error}");
            return error.exit_code();
        }
    };
    let reader = match open_reader(&job, data_dir, args.version.as_deref()) {
        Ok(reader) => reader,
        Err((error, code)) => {
            eprintln!("error: tally export: {error}");
            return code;
        }
    };
    let result = (|| -> Result<usize, String> {
        let snapshot = reader.snapshot().map_err(|e| e.to_string())?;
        let rows = snapshot.all_rows().map_err(|e| e.to_string())?;
        tally::sink::file::write_rows(&args.output, &rows).map_err(|e| e.to_string())?;
        if let Some(path) = &args.late {
            let entries = snapshot.late_entries(0, u64::MAX).map_err(|e| e.to_string())?;
            tally::sink::file::write_late(path, &entries).map_err(|e| format!("{}: {e}", path.display()))?;
        }
        Ok(rows.len())
    })();
    match result {
        Ok(rows) => {
            eprintln!("exported {rows} rows to {}", args.output.display());
            0
        }
        Err(error) => {
            eprintln!("error: tally export: {error}");
            1
        }
    }
}

fn verify(args: VerifyArgs, data_dir: &DataDir) -> i32 {
    let job = job::load(&args.job).and_then(|job| job::with_brokers(job, args.brokers.as_deref()));
    let job = match job.and_then(|job| job::with_cassandra(job, args.cassandra.as_deref())) {
        Ok(job) => job,
        Err(error) => {
            eprintln!("error: {error}");
            return error.exit_code();
        }
    };
    // Every error reads `verify: …` (a VerifyError says so itself).
    let result = (|| -> Result<tally::verify::Report, String> {
        let catalog = match args.catalog.as_ref().or(job.catalog.as_ref()) {
            Some(path) => Some(tally::verify::CatalogFile::load(path).map_err(|e| format!("verify: {e}"))?),
            None => None,
        };
        let store = open_reader(&job, data_dir, Some(&args.version)).map_err(|(e, _)| format!("verify: {e}"))?;
        let log: Box<dyn tally::verify::RecountLog> = match &job.source {
            job::SourceSpec::Kafka { brokers, topic } => {
                let topic =
                    tally::sources::kafka::KafkaTopic { brokers: brokers.clone(), topic: topic.clone(), partitions: job.partitions };
                let salt = data_dir.salt().map_err(|e| format!("verify: salt in {}: {e}", data_dir.root.display()))?;
                Box::new(tally::verify::KafkaRecount::new(topic, salt).map_err(|e| format!("verify: {e}"))?)
            }
            job::SourceSpec::Log { dir: Some(dir) } => Box::new(tally::log::LogView::open(dir).map_err(|e| format!("verify: {e}"))?),
            _ => Box::new(tally::log::LogView::open(&data_dir.log()).map_err(|e| format!("verify: {e}"))?),
        };
        tally::verify::verify(log.as_ref(), store.as_ref(), &job, catalog.as_ref(), args.show).map_err(|e| e.to_string())
    })();
    match result {
        Ok(report) => {
            println!("{}", report.summary());
            if report.is_clean() {
                0
            } else {
                1
            }
        }
        Err(error) => {
            eprintln!("error: tally {error}");
            2
        }
    }
}

fn backfill(args: BackfillArgs, data_dir: &DataDir) -> i32 {
    let job = job::load(&args.job).and_then(|job| job::with_brokers(job, args.brokers.as_deref()));
    let job = match job.and_then(|job| job::with_cassandra(job, args.cassandra.as_deref())) {
        Ok(job) => job,
        Err(error) => {
            eprintln!("error: {error}");
            return error.exit_code();
        }
    };
    let options = tally::backfill::BackfillOptions {
        name: args.version,
        from: args.from,
        to: args.to,
        replace: args.replace,
        workers: args.workers,
        catalog: args.catalog,
        progress: tally::backfill::Progress::for_stderr(),
    };
    match tally::backfill::backfill(&job, data_dir, &options) {
        Ok(report) => {
            let s = report.stats;
            eprintln!(
                "backfill {}: {} clicks ({} on time, {} duplicates, {} too late) in {:.2} s, {:.0} clicks/s; {} rows, committed epoch {}",
                report.name,
                s.read_total(),
                s.on_time,
                s.duplicates,
                s.restating + s.held,
                report.elapsed.as_secs_f64(),
                report.clicks_per_s(),
                report.rows,
                report.committed_epoch.map_or("none".to_owned(), |e| e.to_string())
            );
            // A Cassandra job's versions are found through its job file.
            let whose = match job.sink {
                job::SinkSpec::Cassandra(_) => format!(" --job {}", args.job.display()),
                _ => String::new(),
            };
            eprintln!(
                "check it with `tally verify {} --version {}`, serve it with `tally switch {}{whose}`",
                args.job.display(),
                report.name,
                report.name
            );
            0
        }
        Err(error) => {
            eprintln!("error: tally backfill: {error}");
            error.exit_code()
        }
    }
}

fn versions(args: VersionsArgs, data_dir: &DataDir) -> i32 {
    let cassandra = match cassandra_versions(&args.target, "versions") {
        Ok(cassandra) => cassandra,
        Err(code) => return code,
    };
    let result = match (args.command, &cassandra) {
        (Some(VersionsCommand::Delete { name }), Some(cassandra)) => cassandra.delete(&name).map(|()| eprintln!("deleted version {name}")),
        (Some(VersionsCommand::Delete { name }), None) => versions::delete(data_dir, &name).map(|()| eprintln!("deleted version {name}")),
        (None, Some(cassandra)) => cassandra.list().map(|list| print!("{}", versions_table(&list))),
        (None, None) => versions::list(data_dir).map(|list| print!("{}", versions_table(&list))),
    };
    match result {
        Ok(()) => 0,
        Err(error) => {
            eprintln!("error: tally versions: {error}");
            if error.is_usage() {
                2
            } else {
                1
            }
        }
    }
}

/// The versions of `--job` in Cassandra, for a job with sink.kind =
/// "cassandra"; `None` for the embedded store's. `Err` is the exit code,
/// the message written.
fn cassandra_versions(target: &VersionsTarget, command: &str) -> Result<Option<CassandraVersions>, i32> {
    let Some(path) = &target.job else {
        if target.cassandra.is_some() {
            eprintln!("error: tally {command}: --cassandra: it needs --job (the job whose keyspace it overrides)");
            return Err(2);
        }
        return Ok(None);
    };
    let job = match job::load(path).and_then(|job| job::with_cassandra(job, target.cassandra.as_deref())) {
        Ok(job) => job,
        Err(error) => {
            eprintln!("error: {error}");
            return Err(error.exit_code());
        }
    };
    let job::SinkSpec::Cassandra(config) = &job.sink else { return Ok(None) };
    CassandraVersions::open(config, &job.name).map(Some).map_err(|error| {
        eprintln!("error: tally {command}: {error}");
        if error.is_usage() {
            2
        } else {
            1
        }
    })
}

/// `tally versions`: one line per version, the serving one marked `*`.
fn versions_table(list: &[versions::VersionInfo]) -> String {
    let mut out = format!("{:<2}{:<24} {:<44} {:>12} {:>10} {:>16}\n", "", "NAME", "RANGE", "CLICKS", "ROWS", "COMMITTED EPOCH");
    for v in list {
        let range = match (&v.manifest, &v.origin) {
            (Some(m), _) => format!("{} .. {}", m.from, m.to),
            (None, Some(origin)) if origin.iter().all(|&o| o == 0) => "0 .. committed offsets (live)".to_owned(),
            (None, Some(origin)) => {
                format!("{} .. committed offsets (live)", Position::Offsets((0..).zip(origin.iter().copied()).collect()))
            }
            (None, None) => "(nothing committed)".to_owned(),
        };
        let clicks = v.clicks().map_or("-".to_owned(), |c| c.to_string());
        let epoch = v.committed_epoch.map_or("-".to_owned(), |e| e.to_string());
        let mark = if v.serving { "*" } else { "" };
        out += &format!("{mark:<2}{:<24} {range:<44} {clicks:>12} {:>10} {epoch:>16}", v.name, v.rows);
        if let Some(problem) = &v.problem {
            out += &format!("  ({problem})");
        }
        out.push('\n');
    }
    out
}

fn switch(name: &str, target: &VersionsTarget, data_dir: &DataDir) -> i32 {
    let switched = match cassandra_versions(target, "switch") {
        Ok(Some(cassandra)) => cassandra.switch(name),
        Ok(None) => versions::switch(data_dir, name),
        Err(code) => return code,
    };
    match switched {
        Ok(previous) => {
            eprintln!("serving {name} (was {previous})");
            0
        }
        Err(error) => {
            eprintln!("error: tally switch: {error}");
            if error.is_usage() {
                2
            } else {
                1
            }
        }
    }
}
