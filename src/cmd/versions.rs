//! `tally backfill`, `tally versions` and `tally switch`: versions of the output.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use tally::datadir::DataDir;
use tally::exit;
use tally::job;
use tally::sources::position::Position;
use tally::store::cassandra::CassandraVersions;
use tally::store::versions;

#[derive(Args)]
pub struct BackfillArgs {
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
    #[arg(short = 'w', long = "workers", default_value_t = 1, value_parser = super::at_least_one)]
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
pub struct VersionsArgs {
    #[command(subcommand)]
    command: Option<VersionsCommand>,
    #[command(flatten)]
    target: VersionsTarget,
}

/// Whose versions: the embedded store's in the data directory, or a
/// Cassandra job's.
#[derive(Args)]
pub struct VersionsTarget {
    /// The job file of a job with sink.kind = "cassandra", whose versions
    /// live in its keyspace (without it: the embedded store's).
    #[arg(long, value_name = "JOB", global = true)]
    job: Option<PathBuf>,
    /// Cassandra contact points (host:port,...); overrides the job's sink.hosts.
    #[arg(long, value_name = "HOSTS", global = true)]
    cassandra: Option<String>,
}

#[derive(Subcommand)]
pub enum VersionsCommand {
    /// Delete a version (never `live`, never the serving one).
    Delete {
        /// The version to delete.
        name: String,
    },
}

#[derive(Args)]
pub struct SwitchArgs {
    /// The version to serve (`live`: the job's store).
    name: String,
    #[command(flatten)]
    target: VersionsTarget,
}

pub fn backfill(args: BackfillArgs, data_dir: &DataDir) -> i32 {
    let job = match super::load_job(job::load(&args.job), args.brokers.as_deref(), args.cassandra.as_deref()) {
        Ok(job) => job,
        Err(code) => return code,
    };
    let options = tally::backfill::BackfillOptions {
        name: args.version,
        from: args.from,
        to: args.to,
        replace: args.replace,
        workers: args.workers,
        catalog: args.catalog,
        progress: tally::telemetry::progress::Style::for_stderr(),
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
            exit::OK
        }
        Err(error) => {
            eprintln!("error: tally backfill: {error}");
            error.exit_code()
        }
    }
}

pub fn versions(args: VersionsArgs, data_dir: &DataDir) -> i32 {
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
        Ok(()) => exit::OK,
        Err(error) => {
            eprintln!("error: tally versions: {error}");
            error.exit_code()
        }
    }
}

/// The versions of `--job` in Cassandra, for a job with sink.kind =
/// "cassandra"; `None` for the embedded store's. `Err` is the exit code,
/// the message written.
pub fn cassandra_versions(target: &VersionsTarget, command: &str) -> Result<Option<CassandraVersions>, i32> {
    let Some(path) = &target.job else {
        if target.cassandra.is_some() {
            eprintln!("error: tally {command}: --cassandra: it needs --job (the job whose keyspace it overrides)");
            return Err(exit::USAGE);
        }
        return Ok(None);
    };
    let job = super::load_job(job::load(path), None, target.cassandra.as_deref())?;
    let job::SinkSpec::Cassandra(config) = &job.sink else { return Ok(None) };
    CassandraVersions::open(config, &job.name).map(Some).map_err(|error| {
        eprintln!("error: tally {command}: {error}");
        error.exit_code()
    })
}

/// `tally versions`: one line per version, the serving one marked `*`.
pub fn versions_table(list: &[versions::VersionInfo]) -> String {
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

pub fn switch(args: &SwitchArgs, data_dir: &DataDir) -> i32 {
    let (name, target) = (&args.name, &args.target);
    let switched = match cassandra_versions(target, "switch") {
        Ok(Some(cassandra)) => cassandra.switch(name),
        Ok(None) => versions::switch(data_dir, name),
        Err(code) => return code,
    };
    match switched {
        Ok(previous) => {
            eprintln!("serving {name} (was {previous})");
            exit::OK
        }
        Err(error) => {
            eprintln!("error: tally switch: {error}");
            error.exit_code()
        }
    }
}
