//! `tally log`: the embedded log.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use tally::datadir::DataDir;

#[derive(Subcommand)]
pub enum LogCommand {
    /// Append NDJSON clicks to the embedded log (validated, user ids hashed).
    Import(ImportArgs),
}

#[derive(Args)]
pub struct ImportArgs {
    /// NDJSON click file ("-" for stdin).
    file: PathBuf,
    /// Log partitions, when the log is created (default: the default job's).
    #[arg(long, default_value_t = 8)]
    partitions: u32,
}

pub fn log(command: LogCommand, data_dir: &DataDir) -> i32 {
    match command {
        LogCommand::Import(args) => import(args, data_dir),
    }
}

fn import(args: ImportArgs, data_dir: &DataDir) -> i32 {
    let result = (|| -> Result<tally::ingest::ImportReport, String> {
        let salt = data_dir.salt().map_err(|e| format!("salt in {}: {e}", data_dir.root.display()))?;
        let log = tally::log::Log::open(&data_dir.log(), args.partitions, Default::default()).map_err(|e| e.to_string())?;
        // No retention here: it runs where the job runs, with its offsets.
        let progress = tally::telemetry::progress::ProgressOptions::for_stderr("import");
        tally::ingest::import_path(&args.file, &log, &salt, &progress).map_err(|e| e.to_string())
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
