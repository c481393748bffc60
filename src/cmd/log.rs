//! `tally log`: the embedded log.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use tally::datadir::DataDir;
use tally::exit;
use tally::sources::file::MaxRejected;
use tally::stdio;

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
    let result = (|| -> Result<tally::ingest::ImportReport, (String, i32)> {
        let salt = data_dir.salt().map_err(|e| (format!("salt in {}: {e}", data_dir.root.display()), exit::FAILED))?;
        let input = stdio::reader(&args.file).map_err(|e| (format!("{}: {e}", args.file.display()), exit::USAGE))?;
        let log =
            tally::log::Log::open(&data_dir.log(), args.partitions, Default::default()).map_err(|e| (e.to_string(), e.exit_code()))?;
        // No retention here: it runs where the job runs, with its offsets.
        tally::ingest::import(input, &log, &salt).map_err(|e| (e.to_string(), exit::FAILED))
    })();
    let report = match result {
        Ok(report) => report,
        Err((error, code)) => {
            eprintln!("error: tally log import: {error}");
            return code;
        }
    };
    println!("appended {} clicks, rejected {} lines (of {})", report.appended, report.rejected_total, report.lines);
    for rejected in report.rejected.iter().take(10) {
        eprintln!("  line {}: {}", rejected.line, rejected.error);
    }
    match MaxRejected::NotAll.check(report.rejected_total, report.lines) {
        Ok(()) => exit::OK,
        Err(reason) => {
            eprintln!("error: tally log import: {}: {reason}", stdio::describe(&args.file, "standard input"));
            exit::USAGE
        }
    }
}
