//! `tally ingest` and `tally up`: the long-running services.

use std::path::PathBuf;

use clap::Args;

use tally::datadir::DataDir;
use tally::exit;

#[derive(Args)]
pub struct ServiceArgs {
    /// Ingest config file (TOML; every key in jobs/ingest.example.toml).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Listen address; overrides the config's `addr`.
    #[arg(long)]
    addr: Option<std::net::SocketAddr>,
    /// Accept unsigned clicks (overrides auth.signatures) and, for `up`, let
    /// anyone read the query API and the dashboard without an API key: for
    /// local use only.
    #[arg(long)]
    no_auth: bool,
    /// Redis URL of the duplicate pre-filter; overrides the config's redis.url.
    #[arg(long)]
    redis: Option<String>,
    /// Write clicks to Kafka (bootstrap servers host:port,...) instead of
    /// the embedded log: idempotent producer, acks=all, 202 after delivery.
    #[arg(long, value_name = "BROKERS")]
    kafka: Option<String>,
    /// The Kafka topic, with --kafka.
    #[arg(long, default_value = tally::job::DEFAULT_KAFKA_TOPIC, requires = "kafka")]
    topic: String,
}

/// `--kafka` and `--topic`, checked.
pub fn kafka_target(args: &ServiceArgs) -> Result<Option<tally::up::KafkaTarget>, i32> {
    let Some(brokers) = &args.kafka else { return Ok(None) };
    let checked = tally::job::check_brokers(brokers).and_then(|()| tally::job::check_topic(&args.topic));
    match checked {
        Ok(()) => Ok(Some(tally::up::KafkaTarget { brokers: brokers.clone(), topic: args.topic.clone() })),
        Err(reason) => {
            eprintln!("error: --kafka/--topic: {reason}");
            Err(exit::USAGE)
        }
    }
}

#[derive(Args)]
pub struct IngestArgs {
    #[command(flatten)]
    service: ServiceArgs,
}

#[derive(Args)]
pub struct UpArgs {
    #[command(flatten)]
    service: ServiceArgs,
    /// The job to run (source: log, sink: store or cassandra); default: the
    /// built-in jobs/embedded.toml, or jobs/cassandra.toml with --cassandra.
    #[arg(long)]
    job: Option<PathBuf>,
    /// Commit to Cassandra (contact points host:port,...) and serve the
    /// query API from it: the job's sink.hosts (default job:
    /// jobs/cassandra.toml, keyspace tally).
    #[arg(long, value_name = "HOSTS")]
    cassandra: Option<String>,
    /// Worker threads of the job.
    #[arg(short = 'w', long = "workers", default_value_t = 1, value_parser = super::at_least_one)]
    workers: usize,
    /// Ad catalog CSV of the job (ad_id,campaign_id,advertiser_id[,valid_from]).
    #[arg(long)]
    catalog: Option<PathBuf>,
    /// Also post generated clicks (200 ads, one viral) to the ingest API, ~2,000/s.
    #[arg(long)]
    demo: bool,
}

/// The ingest config: the file's (or the defaults), then the flags.
pub fn service_config(args: &ServiceArgs) -> Result<tally::ingest::config::IngestConfig, i32> {
    let mut config = match &args.config {
        Some(path) => tally::ingest::config::load(path).map_err(|error| {
            eprintln!("error: {error}");
            error.exit_code()
        })?,
        None => tally::ingest::config::IngestConfig::defaults(),
    };
    if let Some(addr) = args.addr {
        config.addr = addr;
    }
    if args.no_auth {
        config.auth = tally::ingest::config::Auth::Off;
    }
    if let Some(url) = &args.redis {
        let redis = config.redis.take().unwrap_or(tally::ingest::config::RedisConfig {
            url: String::new(),
            horizon_ms: None,
            timeout_ms: tally::ingest::config::DEFAULT_REDIS_TIMEOUT_MS,
        });
        config.redis = Some(tally::ingest::config::RedisConfig { url: url.clone(), ..redis });
    }
    Ok(config)
}

pub fn ingest(args: &IngestArgs, data_dir: &DataDir) -> i32 {
    let (config, kafka) = match service_config(&args.service).and_then(|config| Ok((config, kafka_target(&args.service)?))) {
        Ok(checked) => checked,
        Err(code) => return code,
    };
    match tally::up::ingest(&config, data_dir, kafka.as_ref()) {
        Ok(()) => exit::OK,
        Err(error) => {
            eprintln!("error: tally ingest: {error}");
            error.code
        }
    }
}

pub fn up(args: UpArgs, data_dir: &DataDir) -> i32 {
    let config = match service_config(&args.service) {
        Ok(config) => config,
        Err(code) => return code,
    };
    let job = match tally::up::up_job(args.job.as_deref(), args.cassandra.as_deref()) {
        Ok(job) => job,
        Err(error) => {
            eprintln!("error: {error}");
            return error.exit_code();
        }
    };
    let kafka = match kafka_target(&args.service) {
        Ok(kafka) => kafka,
        Err(code) => return code,
    };
    let open_reads = args.service.no_auth;
    let options = tally::up::UpOptions { workers: args.workers, catalog: args.catalog, demo: args.demo, kafka, open_reads };
    match tally::up::up(&config, data_dir, &job, &options) {
        Ok(()) => exit::OK,
        Err(error) => {
            eprintln!("error: tally up: {error}");
            error.code
        }
    }
}
