//! `tally status`: where a job stands (see `tally::status`), from the data
//! directory or the job's Cassandra keyspace and Kafka topic, beside a
//! running job or without one.

use std::path::PathBuf;

use clap::Args;

use tally::datadir::DataDir;
use tally::exit;
use tally::job::{self, Job, SinkSpec, SourceSpec};
use tally::status::{LogOffsets, Sources, VersionLine};
use tally::store::cassandra::CassandraVersions;
use tally::store::versions;

use super::open_reader;

#[derive(Args)]
pub struct StatusArgs {
    /// The job file (default: the built-in jobs/embedded.toml of `tally up`).
    job: Option<PathBuf>,
    /// Print the report as one JSON object.
    #[arg(long)]
    json: bool,
    /// Kafka bootstrap servers (host:port,...); overrides the job's source.brokers.
    #[arg(long)]
    brokers: Option<String>,
    /// Cassandra contact points (host:port,...); overrides the job's sink.hosts.
    #[arg(long, value_name = "HOSTS")]
    cassandra: Option<String>,
}

pub fn status(args: StatusArgs, data_dir: &DataDir) -> i32 {
    let job = match &args.job {
        Some(path) => job::load(path),
        None => tally::up::embedded_job(),
    };
    let job = match super::load_job(job, args.brokers.as_deref(), args.cassandra.as_deref()) {
        Ok(job) => job,
        Err(code) => return code,
    };
    match report(&job, data_dir) {
        Ok(status) if args.json => {
            println!("{}", serde_json::to_string(&status).expect("a status serializes"));
            exit::OK
        }
        Ok(status) => {
            print!("{}", status.to_text());
            exit::OK
        }
        Err((error, code)) => {
            eprintln!("error: tally status: {error}");
            code
        }
    }
}

fn report(job: &Job, data_dir: &DataDir) -> Result<tally::status::Status, (String, i32)> {
    let store = open_reader(job, data_dir, Some(versions::LIVE))?;
    let snapshot = store.snapshot().map_err(|e| (e.to_string(), e.exit_code()))?;
    let (serving, listed, store_name) = match &job.sink {
        SinkSpec::Cassandra(config) => {
            let cassandra = CassandraVersions::open(config, &job.name).map_err(|e| (e.to_string(), e.exit_code()))?;
            let listed = cassandra.list().map_err(|e| (e.to_string(), e.exit_code()))?;
            let serving = listed.iter().find(|v| v.serving).map_or(versions::LIVE.to_owned(), |v| v.name.clone());
            (serving, listed, format!("cassandra {} keyspace {}", config.hosts_text(), config.keyspace))
        }
        _ => {
            let serving = versions::serving(data_dir).map_err(|e| (e.to_string(), e.exit_code()))?;
            let listed = versions::list(data_dir).map_err(|e| (e.to_string(), e.exit_code()))?;
            (serving, listed, data_dir.store().display().to_string())
        }
    };
    let (log, offsets) = log_offsets(job, data_dir);
    let running_pid = tally::status::lock_holder(&data_dir.store()).or_else(|| tally::status::lock_holder(&data_dir.log()));
    let sources = Sources {
        job,
        store: store_name,
        log,
        serving,
        running_pid,
        offsets,
        versions: listed.iter().map(VersionLine::from).collect(),
        now_ms: tally::run::now_ms(),
    };
    tally::status::status(snapshot.as_ref(), sources).map_err(|e| (e.to_string(), e.exit_code()))
}

/// The job's log and what is known of its offsets: an embedded log's
/// start and end offsets, a Kafka topic's end offsets (a broker that does
/// not answer in time leaves them unknown), nothing for a file or the
/// generator.
fn log_offsets(job: &Job, data_dir: &DataDir) -> (String, LogOffsets) {
    match &job.source {
        SourceSpec::Log { dir } => {
            let dir = dir.clone().unwrap_or_else(|| data_dir.log());
            let offsets = match tally::log::LogView::open(&dir) {
                Ok(view) => LogOffsets { starts: Some(view.start_offsets()), ends: Some(view.end_offsets()) },
                Err(_) => LogOffsets::default(),
            };
            (format!("embedded {}", dir.display()), offsets)
        }
        SourceSpec::Kafka { brokers, topic } => {
            let kafka = tally::sources::kafka::KafkaTopic { brokers: brokers.clone(), topic: topic.clone(), partitions: job.partitions };
            let ends = kafka.end_offsets_reader().ok().and_then(|read| read());
            (format!("kafka topic {topic} on {brokers}"), LogOffsets { starts: None, ends })
        }
        _ => ("(a file or the generator: no log)".to_owned(), LogOffsets::default()),
    }
}
