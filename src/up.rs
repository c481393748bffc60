//! The long-running services of one machine: `tally ingest` (the HTTP API
//! in front of the embedded log) and `tally up` (the same, plus the job on
//! that log, the query API and the dashboard, in one process, on one
//! address).
//!
//! One process owns the embedded log and the store (both are locked), so the
//! job of `tally up` reads the very `Log` that ingest appends to, and the
//! query API reads the very store the job commits to (through read
//! transactions, which see only committed epochs). With `--kafka` ingest
//! and the job share a topic instead; with a Cassandra sink (`--cassandra`)
//! the job commits to Cassandra and the query API reads the job's keyspace
//! through a session of its own, as of the applied epoch.

use std::path::Path;
use std::sync::Arc;

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use crate::catalog::Catalog;
use crate::config::{format_duration, ConfigError};
use crate::datadir::DataDir;
use crate::event::salt::UserSalt;
use crate::ingest::client::HttpClient;
use crate::ingest::config::IngestConfig;
use crate::ingest::kafka::KafkaLog;
use crate::ingest::server::ClickLog;
use crate::ingest::server::OPENAPI_JSON;
use crate::ingest::service::{now_ms, stop_signal, Service};
use crate::job::{Job, SinkSpec, SourceSpec};
use crate::keys::{active, add_key, KeyFile, KeyRing, KeyStore, Scope};
use crate::log::{Log, LogOptions};
use crate::query::QueryState;
use crate::query::{CassandraFollowed, LazyReader, ServedStore};
use crate::run::{run, RunOptions};
use crate::sources::generator::{write_catalog, Generator, GeneratorConfig};
use crate::sources::kafka::KafkaTopic;
use crate::store::cassandra::CassandraKeys;
use crate::store::embedded::EmbeddedStore;
use crate::telemetry::{CommitStats, Freshness, SourceStats, Telemetry};

/// The job `tally up` runs unless given another: `jobs/embedded.toml`.
pub const EMBEDDED_JOB: &str = include_str!("../jobs/embedded.toml");
/// The job `tally up --cassandra HOSTS` runs unless given another:
/// `jobs/cassandra.toml`.
pub const CASSANDRA_JOB: &str = include_str!("../jobs/cassandra.toml");

/// Threads of the HTTP runtime.
pub const HTTP_THREADS: usize = 2;
/// Clicks per second the `--demo` generator sends.
pub const DEMO_CLICKS_PER_S: u64 = 2_000;
/// What the names of the keys `--demo` creates start with.
pub const DEMO_KEY_NAME: &str = "tally up --demo";
/// Clicks per request of the `--demo` generator.
pub const DEMO_BATCH_CLICKS: usize = 200;

/// What `tally up` runs besides ingest.
#[derive(Clone, Debug, Default)]
pub struct UpOptions {
    pub workers: usize,
    /// The ad catalog; with `demo` and none given, the generator's.
    pub catalog: Option<PathBuf>,
    /// Also run a generator that posts clicks to the ingest API.
    pub demo: bool,
    /// Ingest into this Kafka topic, and run the job on it.
    pub kafka: Option<KafkaTarget>,
    /// The query API and the dashboard answer anyone (`--no-auth`);
    /// otherwise every read needs an API key.
    pub open_reads: bool,
}

/// Where ingest writes when not to the embedded log: `--kafka BROKERS`
/// and `--topic NAME`.
#[derive(Clone, Debug)]
pub struct KafkaTarget {
    pub brokers: String,
    pub topic: String,
}

/// The log ingest appends to: the embedded one in the data directory, or a
/// Kafka topic (created with `partitions` partitions if missing).
fn ingest_log(
    kafka: Option<&KafkaTarget>,
    data_dir: &DataDir,
    partitions: u32,
    retention_ms: u64,
) -> Result<(Arc<dyn ClickLog>, String), UpError> {
    match kafka {
        Some(target) => {
            let topic = KafkaTopic { brokers: target.brokers.clone(), topic: target.topic.clone(), partitions };
            let log = KafkaLog::connect(&topic)?;
            let described = format!("log: {} on {}", log.describe(), target.brokers);
            Ok((Arc::new(log), described))
        }
        None => {
            let log = open_log(data_dir, partitions, retention_ms)?;
            Ok((log, format!("log: embedded, {}", data_dir.log().display())))
        }
    }
}

/// The built-in embedded job.
pub fn embedded_job() -> Result<Job, ConfigError> {
    crate::job::parse(EMBEDDED_JOB, Path::new("jobs/embedded.toml (built in)"))
}

/// The built-in Cassandra job (the embedded log, committing to keyspace
/// `tally` as job `cassandra`).
pub fn cassandra_job() -> Result<Job, ConfigError> {
    crate::job::parse(CASSANDRA_JOB, Path::new("jobs/cassandra.toml (built in)"))
}

/// The job of `tally up`: `path`, else the built-in one (`jobs/cassandra.toml`
/// with `--cassandra`, `jobs/embedded.toml` without), with `--cassandra
/// HOSTS` in place of its `sink.hosts` (refused for a job whose sink is not
/// Cassandra, as by `run`, `export` and `verify`).
pub fn up_job(path: Option<&Path>, cassandra: Option<&str>) -> Result<Job, ConfigError> {
    let job = match (path, cassandra) {
        (Some(path), _) => crate::job::load(path)?,
        (None, Some(_)) => cassandra_job()?,
        (None, None) => embedded_job()?,
    };
    crate::job::with_cassandra(job, cassandra)
}

/// Why `tally up` or `tally ingest` stopped, with the status of
/// [`crate::exit`] it ends with: a usage error unless said otherwise (a
/// held log or store is busy).
#[derive(Debug)]
pub struct UpError {
    pub message: String,
    pub code: i32,
}

impl From<String> for UpError {
    fn from(message: String) -> UpError {
        UpError { message, code: crate::exit::USAGE }
    }
}

impl std::fmt::Display for UpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// Runs the ingest service until SIGINT or SIGTERM.
pub fn ingest(config: &IngestConfig, data_dir: &DataDir, kafka: Option<&KafkaTarget>) -> Result<(), UpError> {
    let (log, described) = ingest_log(kafka, data_dir, config.partitions, crate::log::DEFAULT_RETENTION_MS)?;
    let replay_state = data_dir.root.join(crate::ingest::replay::STATE_FILE);
    let service = Service::bind_keeping_replays(config, log, salt(config, data_dir)?, Some(&replay_state))?;
    tracing::info!("{}", service.summary());
    tracing::info!("{described}");
    tracing::info!("{}", service.replay_note().unwrap_or_default());
    if kafka.is_some() && matches!(config.auth, crate::ingest::config::Auth::Signed(_)) && config.redis.is_none() {
        tracing::warn!(
            "ingest: the replay guard is this process's alone (no [redis]): a signed request replayed to another ingest \
             process of the topic is not caught; configure [redis] for several ingest processes"
        );
    }
    let health = crate::ingest::server::health_router(Arc::clone(&service.ingest));
    Ok(serve(service, health, OPENAPI_JSON.to_owned())?)
}

/// Runs ingest, `job` on the same log, and the query API with the
/// dashboard, until SIGINT or SIGTERM, which end the process after the
/// commit in flight with the store closed cleanly (or until the job fails,
/// which ends the process: restart it to resume from the last committed
/// epoch). The job commits to the embedded store or to Cassandra, and the
/// query API reads what it committed.
pub fn up(config: &IngestConfig, data_dir: &DataDir, job: &Job, options: &UpOptions) -> Result<(), UpError> {
    let job = &on_kafka(job, options.kafka.as_ref())?;
    check_up_job(job)?;
    let config = &with_job_horizon(config, job)?;
    let (ingest_log, log) = match &options.kafka {
        Some(target) => (ingest_log(Some(target), data_dir, job.partitions, job.log_retention_ms)?.0, None),
        None => {
            let log = open_log(data_dir, job.partitions, job.log_retention_ms)?;
            (Arc::clone(&log) as Arc<dyn ClickLog>, Some(log))
        }
    };
    // The store the job commits to, and what the query API serves of it.
    let (store, served) = match &job.sink {
        SinkSpec::Cassandra(cassandra) => {
            // The job opens its store itself (and creates the tables); the
            // query API connects once they exist, with sessions of its
            // own, and follows the serving pointer in the keyspace.
            let live = Arc::new(LazyReader::cassandra(cassandra, &job.name));
            let served = ServedStore::following(live, Box::new(CassandraFollowed::new(cassandra, &job.name)));
            (None, served)
        }
        _ => {
            std::fs::create_dir_all(data_dir.store()).map_err(|e| format!("{}: {e}", data_dir.store().display()))?;
            let store = EmbeddedStore::open(&data_dir.store()).map_err(|e| UpError { message: e.to_string(), code: e.exit_code() })?;
            let served = ServedStore::embedded(store.reader(), data_dir.clone());
            (Some(Arc::new(Mutex::new(Some(store)))), served)
        }
    };
    let replay_state = data_dir.root.join(crate::ingest::replay::STATE_FILE);
    let service = Service::bind_keeping_replays(config, ingest_log, salt(config, data_dir)?, Some(&replay_state))?;
    let addr = service.local_addr();
    let catalog = match (&options.catalog, options.demo) {
        (Some(path), _) => Some(path.clone()),
        (None, true) => Some(demo_catalog(data_dir)?),
        (None, false) => None,
    };
    // The query API attributes rows to advertisers by the catalog the job
    // counts with: the same file, read at the same start.
    let owners_catalog = catalog.as_deref().map(Catalog::load).transpose().map_err(|e| e.to_string())?;
    let (job_stats, commits) = (Arc::new(SourceStats::default()), Arc::new(CommitStats::default()));
    // Ingest and the job share this process: the time from a 202 to the
    // commit of its clicks is measured here.
    let freshness = Arc::new(Freshness::default());
    service.ingest.stats.track_freshness(Arc::clone(&freshness));
    commits.track_freshness(Arc::clone(&freshness));
    let telemetry = Telemetry::new()
        .with_ingest(Arc::clone(&service.ingest.stats))
        .and_then(|t| t.with_job(Arc::clone(&job_stats), Arc::clone(&commits)))
        .and_then(|t| t.with_freshness(&freshness))
        .map_err(|e| format!("metrics: {e}"))?;
    let telemetry = Arc::new(telemetry);
    let run_options = RunOptions {
        workers: options.workers.max(1),
        data_dir: data_dir.clone(),
        catalog,
        log,
        store,
        stats: Some(Arc::clone(&job_stats)),
        commits: Some(commits),
        announced: true,
        ..RunOptions::default()
    };
    tracing::info!("{}", service.summary());
    tracing::info!("{}", service.replay_note().unwrap_or_default());
    tracing::info!("{}", crate::run::describe(job, &run_options));
    let scheme = if config.tls.is_some() { "https" } else { "http" };
    tracing::info!("query: {scheme}://{addr}/v1/ads/{{id}}/clicks, /v1/top, /v1/late, /openapi.json");
    tracing::info!("dashboard: {scheme}://{addr}/");
    let keys = if options.open_reads { None } else { Some(key_store(job, data_dir)?) };
    announce_access(keys.as_deref(), options, owners_catalog.as_ref())?;
    let keys = keys.map(|store| key_ring(job, data_dir, store));
    let job = job.clone();
    std::thread::Builder::new()
        .name("job".to_owned())
        .spawn(move || {
            let code = match run(&job, &run_options) {
                Ok(_) => 0,
                Err(error) => {
                    tracing::error!("job {}: {error}", job.name);
                    error.exit_code()
                }
            };
            std::process::exit(code);
        })
        .map_err(|e| format!("job thread: {e}"))?;
    if options.demo {
        start_demo(addr, config.tls.is_some())?;
    }
    let state = QueryState::new(served, Arc::clone(&telemetry), now_ms).with_catalog(owners_catalog.as_ref());
    let state = Arc::new(match keys {
        None => state,
        Some(keys) => state.with_keys(keys),
    });
    let service = service.with_telemetry(telemetry);
    let openapi = merge_openapi(OPENAPI_JSON, crate::query::OPENAPI_JSON).to_string();
    // `state` outlives the HTTP runtime: the last reference to a store
    // reader must not be dropped on a runtime thread (a Cassandra session
    // owns a runtime, which may not be dropped there).
    serve(service, crate::query::router(Arc::clone(&state)), openapi)?;
    // Stopped by a signal: stop the job as its own handler would (it may
    // not have seen the signal yet), so that the store is closed cleanly.
    crate::run::stop_cleanly()
}

/// One OpenAPI document from two: `base` with the paths and schemas of
/// `extra` added, under the `info` (one title for the whole API) of
/// `extra` when it has one.
fn merge_openapi(base: &str, extra: &str) -> serde_json::Value {
    let mut doc: serde_json::Value = serde_json::from_str(base).unwrap_or_else(|e| unreachable!("built-in OpenAPI document: {e}"));
    let extra: serde_json::Value = serde_json::from_str(extra).unwrap_or_else(|e| unreachable!("built-in OpenAPI document: {e}"));
    if let Some(info) = extra.get("info") {
        doc["info"] = info.clone();
    }
    for section in ["paths", "components/schemas", "components/securitySchemes"] {
        let pointer = format!("/{section}");
        if let (Some(into), Some(from)) =
            (doc.pointer_mut(&pointer).and_then(|v| v.as_object_mut()), extra.pointer(&pointer).and_then(|v| v.as_object()))
        {
            for (key, value) in from {
                into.insert(key.clone(), value.clone());
            }
        }
    }
    doc
}

/// Where the API keys of `job` are kept: in its keyspace when it commits
/// to Cassandra (so every `tally up` of the job checks the same keys),
/// else in the data directory. Connecting to Cassandra creates the tables
/// if they are missing: this runs before the job starts.
fn key_store(job: &Job, data_dir: &DataDir) -> Result<Box<dyn KeyStore + Send>, UpError> {
    Ok(match &job.sink {
        SinkSpec::Cassandra(cassandra) => Box::new(
            CassandraKeys::open_to_write(cassandra, &job.name).map_err(|e| UpError { message: e.to_string(), code: e.exit_code() })?,
        ),
        _ => Box::new(KeyFile::in_dir(&data_dir.root)),
    })
}

/// The keys the query API checks: the key file, re-read when it changes,
/// or the job's keys in Cassandra (`store`, connected at start), read
/// every second.
fn key_ring(job: &Job, data_dir: &DataDir, store: Box<dyn KeyStore + Send>) -> KeyRing {
    match &job.sink {
        SinkSpec::Cassandra(_) => KeyRing::following(move || store.list().map_err(|e| e.to_string())),
        _ => KeyRing::new(KeyFile::in_dir(&data_dir.root)),
    }
}

/// Says who may read, and with `--demo` creates and prints an operator key
/// and a key of the catalog's first advertiser, so both views can be tried
/// (revoking those of an earlier start). `keys`: where the keys are;
/// `None` when reads are open (`--no-auth`).
fn announce_access(keys: Option<&(dyn KeyStore + Send)>, options: &UpOptions, catalog: Option<&Catalog>) -> Result<(), UpError> {
    let Some(keys) = keys else {
        tracing::warn!(
            "query API and dashboard OPEN (--no-auth): anyone who can reach this address reads every advertiser's clicks (local use only)"
        );
        return Ok(());
    };
    let failed = |e: crate::keys::KeyError| UpError { message: e.to_string(), code: e.exit_code() };
    if options.demo {
        let now = now_ms();
        // The keys an earlier start printed stop working: only the ones
        // printed now do.
        for key in keys.list().map_err(failed)? {
            if key.name.starts_with(DEMO_KEY_NAME) && key.state(now) == "active" {
                keys.revoke(&key.id, now).map_err(failed)?;
            }
        }
        let (_, operator) = add_key(keys, &Scope::Operator, &format!("{DEMO_KEY_NAME} (operator)"), None, now).map_err(failed)?;
        println!("demo operator key:   {operator}");
        if let Some(advertiser) = catalog.and_then(|c| c.versions().next().map(|(_, _, _, advertiser)| advertiser.to_string())) {
            let scope = Scope::advertiser(&advertiser)?;
            let (_, key) = add_key(keys, &scope, &format!("{DEMO_KEY_NAME} ({advertiser})"), None, now).map_err(failed)?;
            println!("demo advertiser key: {key}   ({scope})");
        }
        println!("paste a key into the dashboard, or send it as Authorization: Bearer <key>");
    }
    match active(&keys.list().map_err(failed)?, now_ms()) {
        0 => tracing::warn!(
            "query API: every read needs an API key and there is none yet in {}: tally keys add --operator (or --advertiser ADV) creates one",
            keys.place()
        ),
        n => tracing::info!("query API: every read needs an API key ({n} active in {})", keys.place()),
    }
    Ok(())
}

/// The demo generator's catalog, written into the data directory.
fn demo_catalog(data_dir: &DataDir) -> Result<PathBuf, String> {
    let path = data_dir.root.join("demo-catalog.csv");
    let mut csv = Vec::new();
    write_catalog(&demo_config(), &mut csv).map_err(|e| format!("demo catalog: {e}"))?;
    std::fs::create_dir_all(&data_dir.root).and_then(|()| std::fs::write(&path, csv)).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(path)
}

fn demo_config() -> GeneratorConfig {
    GeneratorConfig {
        ads: 200,
        campaigns: 20,
        advertisers: 5,
        users: 50_000,
        clicks: DEMO_CLICKS_PER_S * 86_400 * 365,
        rate_per_s: DEMO_CLICKS_PER_S,
        ..GeneratorConfig::default()
    }
}

/// Posts generated clicks to the local ingest API in real time: each click
/// is sent once the wall clock reaches its event time, in batches.
fn start_demo(addr: std::net::SocketAddr, tls: bool) -> Result<(), String> {
    if tls {
        return Err("--demo posts over plain HTTP; run it without [tls]".to_owned());
    }
    let config = GeneratorConfig { seed: now_ms(), start_ms: now_ms(), ..demo_config() };
    tracing::info!("demo: posting ~{DEMO_CLICKS_PER_S} generated clicks/s (200 ads, one viral) to http://{addr}/v1/clicks/batch");
    std::thread::Builder::new()
        .name("demo".to_owned())
        .spawn(move || {
            let mut client = HttpClient::new(addr, None);
            let mut body = Vec::with_capacity(DEMO_BATCH_CLICKS * 160);
            let mut in_batch = 0;
            for click in Generator::new(&config) {
                let wait = click.ts.saturating_sub(now_ms()).min(1_000);
                if wait > 0 {
                    std::thread::sleep(Duration::from_millis(wait));
                }
                if click.write_ndjson(&mut body).is_err() {
                    continue;
                }
                in_batch += 1;
                if in_batch == DEMO_BATCH_CLICKS {
                    // The demo is best effort: a refused batch is dropped.
                    let _ = client.post_until_accepted("/v1/clicks/batch", crate::ingest::server::NDJSON, &body, 20);
                    body.clear();
                    in_batch = 0;
                }
            }
        })
        .map(drop)
        .map_err(|e| format!("demo thread: {e}"))
}

/// `config` with the Redis pre-filter's TTL set to the job's dedup
/// horizon, or refused if it sets a longer one: the filter may only answer
/// "duplicate" where the job would drop the click (see `ingest::prefilter`).
fn with_job_horizon(config: &IngestConfig, job: &Job) -> Result<IngestConfig, String> {
    let mut config = config.clone();
    if let Some(redis) = &mut config.redis {
        match redis.horizon_ms {
            Some(ttl) if ttl > job.dedup_horizon_ms => {
                return Err(format!(
                    "[redis] horizon {} is longer than the dedup.horizon of job {} ({}): the pre-filter may only answer \
                     \"duplicate\" for clicks the job would drop",
                    format_duration(ttl),
                    job.name,
                    format_duration(job.dedup_horizon_ms)
                ))
            }
            Some(_) => {}
            None => redis.horizon_ms = Some(job.dedup_horizon_ms),
        }
    }
    Ok(config)
}

fn check_up_job(job: &Job) -> Result<(), String> {
    match (&job.source, &job.sink) {
        (SourceSpec::Log { dir: None } | SourceSpec::Kafka { .. }, SinkSpec::Store | SinkSpec::Cassandra(_)) => Ok(()),
        _ => Err(format!(
            "{}: `tally up` runs jobs with source.kind = \"log\" (or \"kafka\") and sink.kind = \"store\" (or \"cassandra\") on the data directory",
            job.file.display()
        )),
    }
}

/// With `--kafka`: the job reads the topic ingest writes to (a job on the
/// embedded log is moved onto it).
fn on_kafka(job: &Job, kafka: Option<&KafkaTarget>) -> Result<Job, String> {
    let mut job = job.clone();
    match (kafka, &job.source) {
        (None, _) => {}
        (Some(target), SourceSpec::Log { dir: None } | SourceSpec::Kafka { .. }) => {
            job.source = SourceSpec::Kafka { brokers: target.brokers.clone(), topic: target.topic.clone() };
        }
        (Some(_), _) => return Err(format!("{}: --kafka needs a job on the log (source.kind = \"log\" or \"kafka\")", job.file.display())),
    }
    Ok(job)
}

fn open_log(data_dir: &DataDir, partitions: u32, retention_ms: u64) -> Result<Arc<Log>, UpError> {
    let options = LogOptions { retention_ms, ..LogOptions::default() };
    data_dir.create().map_err(|e| format!("{}: {e}", data_dir.root.display()))?;
    let log = Log::open(&data_dir.log(), partitions, options).map_err(|e| UpError { message: e.to_string(), code: e.exit_code() })?;
    for tail in &log.recovery().truncated {
        tracing::warn!("log recovery: {tail}");
    }
    Ok(Arc::new(log))
}

fn salt(config: &IngestConfig, data_dir: &DataDir) -> Result<UserSalt, String> {
    match config.salt {
        Some(salt) => Ok(salt),
        None => data_dir.salt().map_err(|e| format!("salt in {}: {e}", data_dir.root.display())),
    }
}

fn serve(service: Service, extra: axum::Router, openapi: String) -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(HTTP_THREADS)
        .thread_name("http")
        .enable_all()
        .build()
        .map_err(|e| format!("http runtime: {e}"))?;
    runtime.block_on(service.serve(extra, openapi, stop_signal())).map_err(|e| format!("http: {e}"))?;
    tracing::info!("stopped by signal: every acknowledged click is durable in the log");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tally_up_serves_one_document_under_one_title_with_the_signature_and_key_schemes() {
        let doc = merge_openapi(OPENAPI_JSON, crate::query::OPENAPI_JSON);
        assert_eq!(doc["info"]["title"], "tally API");
        assert_eq!(doc["openapi"], "3.0.3");
        for path in ["/v1/clicks", "/v1/top", "/readyz"] {
            assert!(doc["paths"][path].is_object(), "{path}");
        }
        let schemes: Vec<&String> = doc["components"]["securitySchemes"].as_object().unwrap().keys().collect();
        assert_eq!(schemes, ["bearerKey", "tallyClient", "tallySignature", "tallyTimestamp"]);
        assert!(doc["components"]["schemas"]["Click"].is_object() && doc["components"]["schemas"]["Series"].is_object());
        // `tally up` is ready once its store reads: the query API's /readyz.
        assert_eq!(doc["paths"]["/readyz"]["get"]["summary"], "The store can be read.");
    }

    #[test]
    fn cassandra_runs_the_built_in_cassandra_job_at_the_hosts_given() {
        let job = up_job(None, Some("127.0.0.2:9142,127.0.0.3:9142")).unwrap();
        assert_eq!(job.name, "cassandra");
        let SinkSpec::Cassandra(config) = &job.sink else { panic!("{:?}", job.sink) };
        assert_eq!(config.hosts, ["127.0.0.2:9142", "127.0.0.3:9142"]);
        assert_eq!(config.keyspace, crate::store::cassandra::CassandraConfig::default().keyspace);
        check_up_job(&job).unwrap();
        // With --kafka too: Kafka in, Cassandra out.
        let target = KafkaTarget { brokers: "127.0.0.1:9092".into(), topic: "clicks".into() };
        let both = on_kafka(&job, Some(&target)).unwrap();
        assert!(matches!(both.source, SourceSpec::Kafka { ref topic, .. } if topic == "clicks"));
        assert!(matches!(both.sink, SinkSpec::Cassandra(_)));
        check_up_job(&both).unwrap();
    }

    #[test]
    fn without_cassandra_the_embedded_job_and_a_store_job_refuses_cassandra() {
        let job = up_job(None, None).unwrap();
        assert_eq!((job.name.as_str(), &job.sink), ("embedded", &SinkSpec::Store));
        let path = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/jobs/embedded.toml"));
        let error = up_job(Some(path), Some("127.0.0.1:9042")).unwrap_err().to_string();
        assert!(error.contains("sink.hosts") && error.contains("only valid for a job with sink.kind = \"cassandra\""), "{error}");
        assert!(up_job(None, Some("no-port")).unwrap_err().to_string().contains("--cassandra"));
    }
}
