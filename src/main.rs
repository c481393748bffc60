//! The `tally` command line.

mod cmd;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use cmd::export::ExportArgs;
use cmd::gen::GenArgs;
use cmd::keys::KeysArgs;
use cmd::log::LogCommand;
use cmd::run::RunArgs;
use cmd::service::{IngestArgs, UpArgs};
use cmd::status::StatusArgs;
use cmd::verify::VerifyArgs;
use cmd::versions::{BackfillArgs, SwitchArgs, VersionsArgs};
use tally::datadir::DataDir;
use tally::telemetry::log::{LogFormat, LogLevel};

#[derive(Parser)]
#[command(name = "tally", version, about = "Exactly-once ad click aggregation on Timely Dataflow")]
struct Cli {
    /// Where the embedded log, store and salt live.
    #[arg(long, global = true, default_value = tally::datadir::DEFAULT_DATA_DIR)]
    data_dir: PathBuf,
    /// How log events are written to stderr: text (for a person) or json
    /// (one object a line, for a log pipeline).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// The least severe log events written [default: info; without this
    /// flag, RUST_LOG is read as a filter, e.g. tally=debug].
    #[arg(long, global = true, value_enum, value_name = "LEVEL")]
    log_level: Option<LogLevel>,
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
    /// Where a job stands: its last committed epoch and its age, each
    /// partition's offsets, lag and watermark, its settings, the late
    /// ledger and the versions; beside a running job or without one.
    Status(StatusArgs),
    /// API keys of the query API and the dashboard: `keys add`, `keys list`,
    /// `keys revoke ID`.
    Keys(KeysArgs),
}
fn main() -> ExitCode {
    fail_stop_on_panic();
    let cli = Cli::parse();
    if let Err(error) = tally::telemetry::log::init(cli.log_format, cli.log_level) {
        eprintln!("error: {error}");
        return ExitCode::from(2);
    }
    let data_dir = DataDir::new(&cli.data_dir);
    let code = match cli.command {
        Command::Run(args) => cmd::run::run_job(args, data_dir),
        Command::Gen(args) => cmd::gen::generate(args),
        Command::Log(command) => cmd::log::log(command, &data_dir),
        Command::Export(args) => cmd::export::export(args, &data_dir),
        Command::Verify(args) => cmd::verify::verify(args, &data_dir),
        Command::Ingest(args) => cmd::service::ingest(&args, &data_dir),
        Command::Up(args) => cmd::service::up(args, &data_dir),
        Command::Backfill(args) => cmd::versions::backfill(args, &data_dir),
        Command::Versions(args) => cmd::versions::versions(args, &data_dir),
        Command::Status(args) => cmd::status::status(args, &data_dir),
        Command::Switch(args) => cmd::versions::switch(&args, &data_dir),
        Command::Keys(args) => cmd::keys::keys(args, &data_dir),
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
