//! `tally verify`: an independent recount of the log against the store.

use std::path::PathBuf;

use clap::Args;

use tally::datadir::DataDir;
use tally::exit;
use tally::job;

use super::open_reader;

#[derive(Args)]
pub struct VerifyArgs {
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

pub fn verify(args: VerifyArgs, data_dir: &DataDir) -> i32 {
    let job = match super::load_job(job::load(&args.job), args.brokers.as_deref(), args.cassandra.as_deref()) {
        Ok(job) => job,
        Err(code) => return code,
    };
    // Every error reads `verify: …` (a VerifyError says so itself).
    let result = (|| -> Result<tally::verify::Report, (String, i32)> {
        let usage = |e: String| (format!("verify: {e}"), exit::USAGE);
        let catalog = match args.catalog.as_ref().or(job.catalog.as_ref()) {
            Some(path) => Some(tally::verify::CatalogFile::load(path).map_err(|e| usage(e.to_string()))?),
            None => None,
        };
        let store = open_reader(&job, data_dir, Some(&args.version)).map_err(|(e, code)| (format!("verify: {e}"), code))?;
        let log_error = |e: tally::log::LogError| (format!("verify: {e}"), e.exit_code());
        let log: Box<dyn tally::verify::RecountLog> = match &job.source {
            job::SourceSpec::Kafka { brokers, topic } => {
                let topic =
                    tally::sources::kafka::KafkaTopic { brokers: brokers.clone(), topic: topic.clone(), partitions: job.partitions };
                let salt = data_dir.salt().map_err(|e| (format!("verify: salt in {}: {e}", data_dir.root.display()), exit::FAILED))?;
                Box::new(tally::verify::KafkaRecount::new(topic, salt).map_err(|e| (format!("verify: {e}"), exit::FAILED))?)
            }
            job::SourceSpec::Log { dir: Some(dir) } => Box::new(tally::log::LogView::open(dir).map_err(log_error)?),
            _ => Box::new(tally::log::LogView::open(&data_dir.log()).map_err(log_error)?),
        };
        let progress = tally::telemetry::progress::ProgressOptions::for_stderr("verify");
        tally::verify::verify(log.as_ref(), store.as_ref(), &job, catalog.as_ref(), args.show, &progress)
            .map_err(|e| (e.to_string(), e.exit_code()))
    })();
    match result {
        Ok(report) => {
            println!("{}", report.summary());
            if report.is_clean() {
                exit::OK
            } else {
                exit::FAILED
            }
        }
        Err((error, code)) => {
            eprintln!("error: tally {error}");
            code
        }
    }
}
