//! The subcommands of the `tally` binary, one module each.

use tally::config::ConfigError;
use tally::datadir::DataDir;
use tally::job;
use tally::store::cassandra::CassandraVersions;
use tally::store::{self, StoreReader};

pub mod export;
pub mod gen;
pub mod keys;
pub mod log;
pub mod run;
pub mod service;
pub mod status;
pub mod verify;
pub mod versions;

/// The store a job's committed epochs are read from: version `name`
/// (default: the serving one) in its Cassandra keyspace, or of the
/// embedded store. `Err` holds the message and the exit code.
pub fn open_reader(job: &job::Job, data_dir: &DataDir, name: Option<&str>) -> Result<Box<dyn StoreReader>, (String, i32)> {
    if let job::SinkSpec::Cassandra(config) = &job.sink {
        let reader = CassandraVersions::open(config, &job.name).and_then(|versions| match name {
            Some(name) => versions.reader(name),
            None => versions.serving_reader().map(|(_, reader)| reader),
        });
        return reader.map(|r| Box::new(r) as Box<dyn StoreReader>).map_err(|e| (e.to_string(), e.exit_code()));
    }
    let name = match name {
        Some(name) => Ok(name.to_owned()),
        None => store::versions::serving(data_dir),
    };
    // Opening the store repairs it first if a crashed job left it and no
    // job holds it now.
    match name.and_then(|name| store::versions::open(data_dir, &name)) {
        Ok(reader) => Ok(Box::new(reader)),
        Err(error) => Err((error.to_string(), error.exit_code())),
    }
}

/// `loaded` with `--brokers` and `--cassandra` applied; or, having printed
/// why not, the exit status.
pub fn load_job(loaded: Result<job::Job, ConfigError>, brokers: Option<&str>, cassandra: Option<&str>) -> Result<job::Job, i32> {
    let job = loaded.and_then(|job| job::with_brokers(job, brokers)).and_then(|job| job::with_cassandra(job, cassandra));
    job.map_err(|error| {
        eprintln!("error: {error}");
        error.exit_code()
    })
}

/// A clap value parser for counts that must be at least 1 (`-w`, `--processes`).
pub fn at_least_one(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(0) => Err("must be at least 1".to_owned()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

/// `N thing` or `N things`.
pub fn count(n: usize, thing: &str) -> String {
    if n == 1 {
        format!("1 {thing}")
    } else {
        format!("{n} {thing}s")
    }
}
