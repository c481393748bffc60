//! `tally log`: the embedded log.

use std::io::Write;
use std::path::PathBuf;

use clap::{Args, Subcommand};

use tally::datadir::DataDir;
use tally::exit;
use tally::log::{LogView, SegmentInfo};
use tally::sources::file::MaxRejected;
use tally::stdio;

#[derive(Subcommand)]
pub enum LogCommand {
    /// Append NDJSON clicks to the embedded log (validated, user ids hashed).
    Import(ImportArgs),
    /// Partitions, offsets, segments and retention of the embedded log.
    Describe(DescribeArgs),
    /// The last clicks of each partition as NDJSON (user ids as the log
    /// keeps them: hashed); --follow for new ones as they come.
    Tail(TailArgs),
}

#[derive(Args)]
pub struct DescribeArgs {
    /// List every segment file too.
    #[arg(long)]
    segments: bool,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
    /// The job whose retention.log to show (default: the default, 7d).
    #[arg(long, value_name = "JOB")]
    job: Option<PathBuf>,
}

#[derive(Args)]
pub struct TailArgs {
    /// Clicks per partition.
    #[arg(short = 'n', long = "lines", default_value_t = 10)]
    lines: u64,
    /// Only this partition.
    #[arg(long, value_name = "P")]
    partition: Option<u32>,
    /// Keep printing clicks as they are appended, until interrupted.
    #[arg(short, long)]
    follow: bool,
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
        LogCommand::Describe(args) => describe(&args, data_dir),
        LogCommand::Tail(args) => tail(&args, data_dir),
    }
}

/// Partitions, offsets, segments and retention of the embedded log.
fn describe(args: &DescribeArgs, data_dir: &DataDir) -> i32 {
    let retention_ms = match &args.job {
        Some(path) => match tally::job::load(path) {
            Ok(job) => job.log_retention_ms,
            Err(error) => {
                eprintln!("error: {error}");
                return error.exit_code();
            }
        },
        None => tally::log::DEFAULT_RETENTION_MS,
    };
    let view = match LogView::open(&data_dir.log()) {
        Ok(view) => view,
        Err(error) => {
            eprintln!("error: tally log describe: {error}");
            return error.exit_code();
        }
    };
    let partitions: Result<Vec<PartitionLayout>, _> =
        (0..view.partitions()).map(|p| view.segments(p).map(|segments| PartitionLayout::of(p, segments))).collect();
    let partitions = match partitions {
        Ok(partitions) => partitions,
        Err(error) => {
            eprintln!("error: tally log describe: {error}");
            return error.exit_code();
        }
    };
    let layout = LogLayout { dir: view.dir().display().to_string(), retention_ms, partitions };
    let printed =
        if args.json { serde_json::to_string(&layout).map(|json| json + "\n").unwrap_or_default() } else { layout.to_text(args.segments) };
    write_or_quiet(printed.as_bytes())
}

#[derive(serde::Serialize)]
struct LogLayout {
    dir: String,
    /// Segments whose newest click is older than this are deleted, unless
    /// the job still needs them.
    retention_ms: u64,
    partitions: Vec<PartitionLayout>,
}

#[derive(serde::Serialize)]
struct PartitionLayout {
    partition: u32,
    start_offset: u64,
    end_offset: u64,
    bytes: u64,
    newest_ms: Option<u64>,
    segments: Vec<SegmentInfo>,
}

impl PartitionLayout {
    fn of(partition: u32, segments: Vec<SegmentInfo>) -> PartitionLayout {
        PartitionLayout {
            partition,
            start_offset: segments.first().map_or(0, |s| s.base),
            end_offset: segments.last().map_or(0, |s| s.end),
            bytes: segments.iter().map(|s| s.bytes).sum(),
            newest_ms: segments.iter().filter_map(|s| s.newest_ms).max(),
            segments,
        }
    }
}

impl LogLayout {
    fn to_text(&self, segments: bool) -> String {
        let days = self.retention_ms as f64 / 86_400_000.0;
        let mut out = format!(
            "log {}: {} partitions, retention {} ms ({days:.1} d: a segment whose newest click is older is deleted once the job has committed past it)\n",
            self.dir,
            self.partitions.len(),
            self.retention_ms
        );
        out += &format!("{:>9} {:>12} {:>12} {:>9} {:>14}  {}\n", "PARTITION", "START", "END", "SEGMENTS", "BYTES", "NEWEST CLICK");
        for p in &self.partitions {
            let newest = p.newest_ms.map_or("-".to_owned(), tally::time::format_rfc3339);
            out += &format!(
                "{:>9} {:>12} {:>12} {:>9} {:>14}  {newest}\n",
                p.partition,
                p.start_offset,
                p.end_offset,
                p.segments.len(),
                p.bytes
            );
            for s in p.segments.iter().filter(|_| segments) {
                let newest = s.newest_ms.map_or("-".to_owned(), tally::time::format_rfc3339);
                out += &format!("{:>9} {:>12} {:>12} {:>9} {:>14}  {newest}  {}\n", "", s.base, s.end, "", s.bytes, s.file);
            }
        }
        out
    }
}

/// How often `tally log tail --follow` looks for new clicks.
const FOLLOW_EVERY: std::time::Duration = std::time::Duration::from_millis(500);
/// Clicks read per call while tailing.
const TAIL_BATCH: usize = 4_096;

/// The last clicks of each partition as NDJSON; with `--follow`, then each
/// new click as it is appended.
fn tail(args: &TailArgs, data_dir: &DataDir) -> i32 {
    let view = match LogView::open(&data_dir.log()) {
        Ok(view) => view,
        Err(error) => {
            eprintln!("error: tally log tail: {error}");
            return error.exit_code();
        }
    };
    let partitions: Vec<u32> = match args.partition {
        Some(p) if p >= view.partitions() => {
            eprintln!("error: tally log tail: --partition {p}: the log has {} partitions", view.partitions());
            return exit::USAGE;
        }
        Some(p) => vec![p],
        None => (0..view.partitions()).collect(),
    };
    let (starts, ends) = (view.start_offsets(), view.end_offsets());
    let mut next: Vec<u64> = partitions.iter().map(|&p| ends[p as usize].saturating_sub(args.lines).max(starts[p as usize])).collect();
    let mut view = view;
    loop {
        for (i, &p) in partitions.iter().enumerate() {
            match print_from(&view, p, &mut next[i]) {
                Ok(true) => {}
                Ok(false) => return exit::OK, // the reader went away
                Err(error) => {
                    eprintln!("error: tally log tail: {error}");
                    return error.exit_code();
                }
            }
        }
        if !args.follow {
            return exit::OK;
        }
        std::thread::sleep(FOLLOW_EVERY);
        view = match LogView::open(&data_dir.log()) {
            Ok(view) => view,
            Err(error) => {
                eprintln!("error: tally log tail: {error}");
                return error.exit_code();
            }
        };
    }
}

/// Prints partition `p` from `*offset` to the view's end and moves
/// `*offset` on; `false` when standard output is closed.
fn print_from(view: &LogView, p: u32, offset: &mut u64) -> Result<bool, tally::log::LogError> {
    // Retention may have deleted what was next.
    *offset = (*offset).max(view.start_offsets()[p as usize]);
    let mut reader = view.reader(p, *offset)?;
    let mut batch = Vec::with_capacity(TAIL_BATCH);
    let mut out = std::io::stdout().lock();
    loop {
        batch.clear();
        if reader.read(&mut batch, TAIL_BATCH)? == 0 {
            return Ok(out.flush().is_ok());
        }
        for click in &batch {
            let line = serde_json::json!({
                "partition": p,
                "offset": *offset,
                "ad_id": click.ad.as_str(),
                "timestamp": click.ts,
                "user": format!("{:016x}", click.user),
                "request_id": tally::row::format_uuid(click.request_id),
            });
            if writeln!(out, "{line}").is_err() {
                return Ok(false);
            }
            *offset += 1;
        }
    }
}

/// Writes `bytes` to standard output; a closed pipe (`| head`) is no error.
fn write_or_quiet(bytes: &[u8]) -> i32 {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(bytes).and_then(|()| out.flush());
    exit::OK
}

fn import(args: ImportArgs, data_dir: &DataDir) -> i32 {
    let result = (|| -> Result<tally::ingest::ImportReport, (String, i32)> {
        let salt = data_dir.salt().map_err(|e| (format!("salt in {}: {e}", data_dir.root.display()), exit::FAILED))?;
        if !stdio::is_std(&args.file) && !args.file.exists() {
            return Err((format!("{}: no such file", args.file.display()), exit::USAGE));
        }
        let log =
            tally::log::Log::open(&data_dir.log(), args.partitions, Default::default()).map_err(|e| (e.to_string(), e.exit_code()))?;
        // No retention here: it runs where the job runs, with its offsets.
        let progress = tally::telemetry::progress::ProgressOptions::for_stderr("import");
        tally::ingest::import_path(&args.file, &log, &salt, &progress).map_err(|e| {
            let code = if matches!(e, tally::ingest::ImportError::Open { .. }) { exit::USAGE } else { exit::FAILED };
            (e.to_string(), code)
        })
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
