//! `tally run`: compile a job file and run it, printing what it read.

use std::path::PathBuf;
use std::sync::Arc;

use clap::Args;

use tally::datadir::DataDir;
use tally::exit;
use tally::job;
use tally::run::{run, Counted, RunOptions, RunReport};
use tally::sources::file::MaxRejected;
use tally::sources::position::Position;
use tally::telemetry::{serve_metrics, CommitStats, SourceStats, Telemetry};

#[derive(Args)]
pub struct RunArgs {
    /// The job file (e.g. jobs/clicks.toml).
    job: PathBuf,
    /// Click NDJSON file; overrides the job's source.
    #[arg(long)]
    input: Option<PathBuf>,
    /// Ad catalog CSV (ad_id,campaign_id,advertiser_id[,valid_from]); overrides the job's.
    #[arg(long)]
    catalog: Option<PathBuf>,
    /// Rows NDJSON file ("-" for stdout); overrides the job's sink. The
    /// late ledger goes next to it (rows.late.ndjson), or to --late.
    #[arg(long)]
    output: Option<PathBuf>,
    /// Late-ledger NDJSON file of a file sink ("-" for stdout); default:
    /// beside --output, none when the rows go to stdout.
    #[arg(long, value_name = "FILE")]
    late: Option<PathBuf>,
    /// Refuse a click file with more rejected lines than N (a count) or
    /// RATIO (a share, e.g. 0.01); by default only a file whose every line
    /// is rejected is refused. A refused file runs nothing.
    #[arg(long, value_name = "N|RATIO")]
    max_rejected: Option<MaxRejected>,
    /// Worker threads in this process (at least 1).
    #[arg(short = 'w', long = "workers", default_value_t = 1, value_parser = super::at_least_one)]
    workers: usize,
    /// Processes in the cluster (at least 1).
    #[arg(long, default_value_t = 1, value_parser = super::at_least_one)]
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

pub fn run_job(args: RunArgs, data_dir: DataDir) -> i32 {
    let job = match super::load_job(job::load(&args.job), args.brokers.as_deref(), args.cassandra.as_deref()) {
        Ok(job) => job,
        Err(code) => return code,
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
            return exit::USAGE;
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
                return exit::USAGE;
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
        late: args.late,
        max_rejected: args.max_rejected.unwrap_or_default(),
        data_dir,
        bounded: args.bounded,
        leave_open: args.leave_open,
        log: None,
        store: None,
        stats: Some(stats),
        commits: Some(commits),
        peer_timeout: Some(std::time::Duration::from_secs(args.peer_timeout.max(1))),
        progress: tally::telemetry::progress::ProgressOptions::for_stderr("run"),
        announced: false,
    };
    match run(&job, &options) {
        Ok(report) => {
            print_report(&report, args.workers, args.processes);
            exit::OK
        }
        Err(error) => {
            eprintln!("error: {error}");
            error.exit_code()
        }
    }
}

/// Prints what the run read, once per run: a cluster's totals are process
/// 0's to print; every other process says only that its part is done.
pub fn print_report(report: &RunReport, workers: usize, processes: usize) {
    if let Counted::Part { process } = report.counted {
        eprintln!(
            "process {process} of {processes}: its part is done in {:.2} s; process 0 prints the totals",
            report.elapsed.as_secs_f64()
        );
        return;
    }
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
        "done in {:.2} s with {}: {:.0} clicks/s, dedup memory at most {} ids (all partitions)",
        secs,
        workers_text(workers, processes),
        s.read_total() as f64 / secs.max(1e-9),
        s.remembered_max
    );
}

/// "2 workers", or in a cluster "4 workers in 2 processes".
fn workers_text(workers: usize, processes: usize) -> String {
    match processes {
        0 | 1 => super::count(workers, "worker"),
        n => format!("{} in {n} processes", super::count(workers * n, "worker")),
    }
}
