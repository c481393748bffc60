//! `tally export`: the committed rows of a store as NDJSON.

use std::path::PathBuf;

use clap::Args;

use tally::datadir::DataDir;
use tally::exit;
use tally::job;
use tally::stdio::{describe, is_std};

use super::open_reader;

#[derive(Args)]
pub struct ExportArgs {
    /// The job file (names the store's job; rows come from the data directory).
    job: PathBuf,
    /// Where to write the rows ("-" for stdout).
    #[arg(long)]
    output: PathBuf,
    /// Where to write the late ledger too (NDJSON, as `rows.late.ndjson`;
    /// "-" for stdout).
    #[arg(long)]
    late: Option<PathBuf>,
    /// The version of the output to export (default: the one serving).
    #[arg(long, value_name = "NAME")]
    version: Option<String>,
    /// Cassandra contact points (host:port,...); overrides the job's sink.hosts.
    #[arg(long, value_name = "HOSTS")]
    cassandra: Option<String>,
}

pub fn export(args: ExportArgs, data_dir: &DataDir) -> i32 {
    let job = match super::load_job(job::load(&args.job), None, args.cassandra.as_deref()) {
        Ok(job) => job,
        Err(code) => return code,
    };
    let reader = match open_reader(&job, data_dir, args.version.as_deref()) {
        Ok(reader) => reader,
        Err((error, code)) => {
            eprintln!("error: tally export: {error}");
            return code;
        }
    };
    if is_std(&args.output) && args.late.as_deref().is_some_and(is_std) {
        eprintln!("error: tally export: --output and --late cannot both be standard output");
        return exit::USAGE;
    }
    let result = (|| -> Result<usize, (String, i32)> {
        let store = |e: tally::store::StoreError| (e.to_string(), e.exit_code());
        let file = |path: &std::path::Path| {
            let path = describe(path, "standard output");
            move |e: std::io::Error| (format!("{path}: {e}"), exit::FAILED)
        };
        let snapshot = reader.snapshot().map_err(store)?;
        let rows = snapshot.all_rows().map_err(store)?;
        let progress = tally::telemetry::progress::ProgressOptions::for_stderr("export");
        tally::sink::file::write_rows(&args.output, &rows, &progress).map_err(file(&args.output))?;
        if let Some(path) = &args.late {
            let entries = snapshot.late_entries(0, u64::MAX).map_err(store)?;
            tally::sink::file::write_late(path, &entries).map_err(file(path))?;
        }
        Ok(rows.len())
    })();
    match result {
        Ok(rows) => {
            eprintln!("exported {rows} rows to {}", describe(&args.output, "standard output"));
            exit::OK
        }
        Err((error, code)) => {
            eprintln!("error: tally export: {error}");
            code
        }
    }
}
