//! The long-running services of one machine: `tally ingest` (the HTTP API
//! in front of the embedded log) and `tally up` (the same, plus the job on
//! that log in the same process).
//!
//! One process owns the embedded log (it is locked), so the job of `tally
//! up` reads the very `Log` that ingest appends to and sees each click as
//! soon as its append is durable.

use std::path::Path;
use std::sync::Arc;

use crate::datadir::DataDir;
use crate::ingest::config::IngestConfig;
use crate::ingest::service::{stop_signal, Service};
use crate::job::{Job, JobError, SinkSpec, SourceSpec};
use crate::log::{Log, LogOptions};
use crate::run::{run, RunOptions};
use crate::sources::file::UserSalt;

/// The job `tally up` runs unless given another: `jobs/embedded.toml`.
pub const EMBEDDED_JOB: &str = include_str!("../jobs/embedded.toml");

/// Threads of the HTTP runtime.
pub const HTTP_THREADS: usize = 2;

/// The built-in embedded job.
pub fn embedded_job() -> Result<Job, JobError> {
    crate::job::parse(EMBEDDED_JOB, Path::new("jobs/embedded.toml (built in)"))
}

/// Runs the ingest service until SIGINT or SIGTERM.
pub fn ingest(config: &IngestConfig, data_dir: &DataDir) -> Result<(), String> {
    let log = open_log(data_dir, config.partitions, crate::log::DEFAULT_RETENTION_MS)?;
    let service = Service::bind(config, log, salt(config, data_dir)?)?;
    eprintln!("{}", service.summary());
    serve(service)
}

/// Runs ingest and `job` on the same embedded log until SIGINT or SIGTERM
/// (or until the job fails, which ends the process: restart it to resume
/// from the last committed epoch).
pub fn up(config: &IngestConfig, data_dir: &DataDir, job: &Job, workers: usize) -> Result<(), String> {
    check_embedded(job)?;
    let log = open_log(data_dir, job.partitions, job.log_retention_ms)?;
    let service = Service::bind(config, Arc::clone(&log) as _, salt(config, data_dir)?)?;
    eprintln!("{}", service.summary());
    eprintln!("job: {} on {} ({} partitions, {workers} workers), committing to {}", job.name, data_dir.log().display(), job.partitions, data_dir.store().display());
    let options = RunOptions { workers, data_dir: data_dir.clone(), log: Some(log), ..RunOptions::default() };
    let job = job.clone();
    std::thread::Builder::new()
        .name("job".to_owned())
        .spawn(move || {
            let code = match run(&job, &options) {
                Ok(_) => 0,
                Err(error) => {
                    eprintln!("error: job {}: {error}", job.name);
                    error.exit_code()
                }
            };
            std::process::exit(code);
        })
        .map_err(|e| format!("job thread: {e}"))?;
    serve(service)
}

fn check_embedded(job: &Job) -> Result<(), String> {
    match (&job.source, &job.sink) {
        (SourceSpec::Log { dir: None }, SinkSpec::Store) => Ok(()),
        _ => Err(format!("{}: `tally up` runs jobs with source.kind = \"log\" and sink.kind = \"store\" on the data directory", job.file.display())),
    }
}

fn open_log(data_dir: &DataDir, partitions: u32, retention_ms: u64) -> Result<Arc<Log>, String> {
    let options = LogOptions { retention_ms, ..LogOptions::default() };
    let log = Log::open(&data_dir.log(), partitions, options).map_err(|e| e.to_string())?;
    for tail in &log.recovery().truncated {
        eprintln!("log recovery: {tail}");
    }
    Ok(Arc::new(log))
}

fn salt(config: &IngestConfig, data_dir: &DataDir) -> Result<UserSalt, String> {
    match config.salt {
        Some(salt) => Ok(salt),
        None => data_dir.salt().map_err(|e| format!("salt in {}: {e}", data_dir.root.display())),
    }
}

fn serve(service: Service) -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(HTTP_THREADS)
        .thread_name("http")
        .enable_all()
        .build()
        .map_err(|e| format!("http runtime: {e}"))?;
    runtime.block_on(service.serve(axum::Router::new(), stop_signal())).map_err(|e| format!("http: {e}"))?;
    eprintln!("stopped by signal: every acknowledged click is durable in the log");
    Ok(())
}
