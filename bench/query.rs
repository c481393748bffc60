//! Query API latency under ingest load: `tally up` on the embedded store
//! against `tally up --cassandra HOSTS`, in one invocation.
//!
//! A program, not a timed test (see `bench/README.md`): it prints tables
//! and lines for scripts, and never asserts on a timing. Rows, each run
//! `--runs` times, interleaved (run 1 of every row, then run 2, …):
//!
//! - **embedded**: `tally up` on a fresh data directory, the built-in job
//!   (`jobs/embedded.toml`): the embedded log and store, the query API
//!   reading the store the job commits to.
//! - **cassandra**: `tally up --cassandra HOSTS --job FILE` on a fresh data
//!   directory: the embedded log, the job committing to Cassandra (keyspace
//!   `tally_bench`, replication factor 1, QUORUM) under a job name of its
//!   own per run (a name already committed would resume), the query API
//!   reading the keyspace. Skipped, with a note, without `--cassandra`.
//!
//! Both run with the generator's catalog (`--catalog`), so that campaigns
//! are the catalog's. Each run sends batches of 1,000 generated clicks
//! (JSON arrays, from two keep-alive connections) paced at `--rate` clicks/s,
//! stamped with the wall clock (`common::http_load`'s bodies and pacing);
//! once every path they ask for shows committed rows, `--query-clients`
//! closed-loop clients (a keep-alive `HttpClient` each) cycle for
//! `--seconds` over four read routes — an ad's 1m series, a campaign's 5m
//! series, the top list of the latest 1m window, the late ledger — asking
//! for the most clicked ads of the request bodies and their campaigns.
//! Every request's latency (written until the reply is read) is recorded;
//! non-200 answers are errors, 200 answers without rows are counted apart.
//! The server's, this program's, the Cassandra nodes' and the machine's
//! CPU time are read around the query interval.
//!
//! Exits 1 if a route never answered 200 with rows in a row's runs (so a
//! smoke run checks that every route reads what the job committed), 2 on
//! a bad flag.
//!
//! Usage: `cargo bench --bench query -- [--cassandra HOSTS] [--rate N]
//! [--seconds S] [--query-clients Q] [--runs R] [--workers W] [--smoke]`

mod common;

use std::collections::HashMap;
use std::ffi::OsString;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::http_load::{
    bodies, interrupted, load_until, now_ms, register_signals, sleep_until, Load, Mode, Pool, Server, Shape, BATCH_CLICKS,
    DEFAULT_MAX_INFLIGHT, ERROR_PAUSE, LOG_PARTITIONS,
};
use common::{at_most, cpu_time, human, machine_busy, median, min_max, number, percentile, tally_binary};
use serde_json::Value;
use tally::ingest::client::HttpClient;
use tally::sources::generator::{write_catalog, GeneratorConfig};

const DEFAULT_RATE_PER_S: u64 = 5_000;
const SMOKE_RATE_PER_S: u64 = 2_000;
const DEFAULT_SECONDS: u64 = 20;
const SMOKE_SECONDS: u64 = 5;
const DEFAULT_QUERY_CLIENTS: usize = 4;
const DEFAULT_RUNS: usize = 3;
/// Job workers of `tally up` (as in `run-cassandra.sh`).
const DEFAULT_WORKERS: usize = 2;
/// Below one batch per second from each ingest connection, a paced
/// connection would sleep for seconds between requests.
const MIN_RATE_PER_S: u64 = (BATCH_CLICKS * INGEST_CONNECTIONS) as u64;
const MAX_RATE_PER_S: u64 = 1_000_000;
const MAX_SECONDS: u64 = 600;
const MAX_QUERY_CLIENTS: usize = 256;
const MAX_RUNS: usize = 100;
/// Keep-alive connections that send the ingest load.
const INGEST_CONNECTIONS: usize = 2;
/// Seconds of clicks rendered into request bodies; a connection that runs
/// through its bodies sends them again, restamped.
const POOL_SECONDS: u64 = 30;
/// At most this many clicks are rendered (~140 B each).
const MAX_POOL_CLICKS: u64 = 1_000_000;
/// Longest wait, after the server starts, until every queried path shows
/// committed rows (the Cassandra job creates its keyspace and tables first).
const FIRST_ROWS_TIMEOUT: Duration = Duration::from_secs(120);
const FIRST_ROWS_POLL: Duration = Duration::from_millis(100);
/// The query clients ask for this many of the most clicked ads.
const QUERY_ADS: usize = 16;
/// Keyspace of the Cassandra row (shared with `run-cassandra.sh`'s runs,
/// under other job names).
const KEYSPACE: &str = "tally_bench";

const USAGE: &str = "usage: query [--cassandra HOSTS] [--rate N] [--seconds S] [--query-clients Q] [--runs R] [--workers W] [--smoke]";

#[derive(Debug)]
struct Args {
    /// Contact points `host:port,...`; `None`: the cassandra row is skipped.
    cassandra: Option<String>,
    rate_per_s: u64,
    seconds: u64,
    query_clients: usize,
    runs: usize,
    workers: usize,
    smoke: bool,
}

fn parse_args() -> Result<Args, String> {
    let (mut cassandra, mut rate, mut seconds, mut runs, mut smoke) = (None, None, None, None, false);
    let (mut query_clients, mut workers) = (DEFAULT_QUERY_CLIENTS, DEFAULT_WORKERS);
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        match flag.as_str() {
            "--cassandra" => {
                let hosts = it.next().ok_or("--cassandra: missing value")?;
                tally::store::cassandra::config::parse_hosts(&hosts).map_err(|reason| format!("--cassandra: {reason}"))?;
                cassandra = Some(hosts);
            }
            "--rate" => rate = Some(number(&flag, it.next())?),
            "--seconds" => seconds = Some(number(&flag, it.next())?),
            "--query-clients" => query_clients = number(&flag, it.next())? as usize,
            "--runs" => runs = Some(number(&flag, it.next())? as usize),
            "--workers" => workers = number(&flag, it.next())? as usize,
            "--smoke" => smoke = true,
            // `cargo bench` passes `--bench` to harness-less benches.
            "--bench" => {}
            other => return Err(format!("unknown argument {other:?}; {USAGE}")),
        }
    }
    let args = Args {
        cassandra,
        rate_per_s: rate.unwrap_or(if smoke { SMOKE_RATE_PER_S } else { DEFAULT_RATE_PER_S }),
        seconds: seconds.unwrap_or(if smoke { SMOKE_SECONDS } else { DEFAULT_SECONDS }),
        query_clients,
        runs: runs.unwrap_or(if smoke { 1 } else { DEFAULT_RUNS }),
        workers,
        smoke,
    };
    if !(MIN_RATE_PER_S..=MAX_RATE_PER_S).contains(&args.rate_per_s) {
        return Err(format!("--rate: must be in {MIN_RATE_PER_S}..={MAX_RATE_PER_S} clicks/s, got {}", args.rate_per_s));
    }
    at_most("--seconds", args.seconds, MAX_SECONDS)?;
    at_most("--query-clients", args.query_clients, MAX_QUERY_CLIENTS)?;
    at_most("--runs", args.runs, MAX_RUNS)?;
    at_most("--workers", args.workers, tally::run::MAX_WORKERS)?;
    Ok(args)
}

fn main() {
    let args = match parse_args() {
        Ok(args) => args,
        Err(message) => {
            eprintln!("query: {message}");
            std::process::exit(2);
        }
    };
    match register_signals().and_then(|()| parent(&args)) {
        Ok(true) => {}
        Ok(false) => std::process::exit(1),
        Err(message) => {
            eprintln!("query: {message}");
            std::process::exit(1);
        }
    }
}

// ---- rows and routes --------------------------------------------------------------

/// What `tally up` commits to and the query API reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Store {
    Embedded,
    Cassandra,
}

const STORES: [Store; 2] = [Store::Embedded, Store::Cassandra];

impl Store {
    fn label(self) -> &'static str {
        match self {
            Store::Embedded => "embedded",
            Store::Cassandra => "cassandra",
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Store::Embedded => "`tally up`, built-in job: embedded log and store (redb)",
            Store::Cassandra => {
                "`tally up --cassandra HOSTS --job FILE`: embedded log, job committing to Cassandra (RF 1, QUORUM), query API reading it"
            }
        }
    }
}

/// A read route of the query API.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Route {
    Ad,
    Campaign,
    Top,
    Late,
}

const ROUTES: [Route; 4] = [Route::Ad, Route::Campaign, Route::Top, Route::Late];

impl Route {
    fn label(self) -> &'static str {
        match self {
            Route::Ad => "/v1/ads/{id}/clicks?window=1m",
            Route::Campaign => "/v1/campaigns/{id}/clicks?window=5m",
            Route::Top => "/v1/top?window=1m",
            Route::Late => "/v1/late",
        }
    }

    /// The path of the `n`-th request of this route from one client.
    fn path(self, keys: &Keys, n: usize) -> String {
        match self {
            Route::Ad => format!("/v1/ads/{}/clicks?window=1m", keys.ads[n % keys.ads.len()]),
            Route::Campaign => format!("/v1/campaigns/{}/clicks?window=5m", keys.campaigns[n % keys.campaigns.len()]),
            Route::Top => "/v1/top?window=1m".to_owned(),
            Route::Late => "/v1/late".to_owned(),
        }
    }

    /// Whether a 200 answer holds rows (series rows, top ads, ledger entries).
    fn has_rows(self, answer: &Value) -> bool {
        let field = match self {
            Route::Ad | Route::Campaign => "rows",
            Route::Top => "ads",
            Route::Late => "entries",
        };
        answer[field].as_array().is_some_and(|rows| !rows.is_empty())
    }
}

/// The ids the query clients ask for: the most clicked ads of the request
/// bodies that the catalog lists, and their campaigns.
struct Keys {
    ads: Vec<String>,
    campaigns: Vec<String>,
}

impl Keys {
    fn of(pool: &Pool, catalog_csv: &str) -> Result<Keys, String> {
        // `ad_id,campaign_id,advertiser_id` lines after the header.
        let campaign_of: HashMap<&str, &str> = catalog_csv
            .lines()
            .skip(1)
            .filter_map(|line| {
                let mut fields = line.split(',');
                Some((fields.next()?, fields.next()?))
            })
            .collect();
        #[derive(serde::Deserialize)]
        struct Click<'a> {
            ad_id: &'a str,
        }
        let mut clicks: HashMap<&str, u64> = HashMap::new();
        for line in &pool.lines {
            let click: Click = serde_json::from_slice(pool.line(line)).map_err(|e| format!("request bodies: {e}"))?;
            *clicks.entry(click.ad_id).or_default() += 1;
        }
        let mut ranked: Vec<(&str, u64)> = clicks.into_iter().filter(|(ad, _)| campaign_of.contains_key(ad)).collect();
        ranked.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        let ads: Vec<String> = ranked.iter().take(QUERY_ADS).map(|(ad, _)| (*ad).to_owned()).collect();
        let mut campaigns: Vec<String> = Vec::new();
        for ad in &ads {
            let campaign = campaign_of[ad.as_str()];
            if !campaigns.iter().any(|c| c == campaign) {
                campaigns.push(campaign.to_owned());
            }
        }
        if ads.is_empty() {
            return Err("request bodies: no click of an ad in the catalog".to_owned());
        }
        Ok(Keys { ads, campaigns })
    }
}

// ---- one run ----------------------------------------------------------------------

/// What the query clients saw on one route.
#[derive(Default)]
struct RouteLoad {
    /// Latency of each 200 answer, µs.
    latencies_us: Vec<u32>,
    with_rows: u64,
    without_rows: u64,
    /// Non-200 answers and connection errors.
    errors: u64,
    first_problem: Option<String>,
}

impl RouteLoad {
    fn merge(&mut self, other: &RouteLoad) {
        self.latencies_us.extend_from_slice(&other.latencies_us);
        self.with_rows += other.with_rows;
        self.without_rows += other.without_rows;
        self.errors += other.errors;
        if self.first_problem.is_none() {
            self.first_problem.clone_from(&other.first_problem);
        }
    }

    fn requests(&self) -> u64 {
        self.with_rows + self.without_rows + self.errors
    }
}

/// CPU times read at one instant.
struct Usage {
    server: Duration,
    client: Duration,
    nodes: Duration,
    busy: Duration,
}

impl Usage {
    fn read(server_stat: &str, nodes: &[u32]) -> Usage {
        Usage {
            server: cpu_time(server_stat),
            client: cpu_time("/proc/self/stat"),
            nodes: nodes.iter().map(|pid| cpu_time(&format!("/proc/{pid}/stat"))).sum(),
            busy: machine_busy(),
        }
    }
}

/// What one run measured over its query interval.
struct Sample {
    interval: Duration,
    /// In [`ROUTES`] order.
    routes: Vec<RouteLoad>,
    /// Clicks ingest accepted during the interval (`/v1/stats`).
    ingested: u64,
    /// How far the committed epoch was behind the wall clock at the end.
    lag_ms: Option<u64>,
    server_cpu: Duration,
    client_cpu: Duration,
    nodes_cpu: Duration,
    busy: Duration,
    /// The ingest connections over the whole run.
    ingest: Load,
}

impl Sample {
    fn all(&self) -> RouteLoad {
        let mut all = RouteLoad::default();
        self.routes.iter().for_each(|route| all.merge(route));
        all
    }

    fn requests_per_s(&self) -> f64 {
        self.all().requests() as f64 / self.interval.as_secs_f64()
    }

    /// Cores other processes kept busy: the machine's busy time minus the
    /// server's, this program's and the Cassandra nodes'.
    fn other_load(&self) -> f64 {
        self.busy.saturating_sub(self.server_cpu + self.client_cpu + self.nodes_cpu).as_secs_f64() / self.interval.as_secs_f64()
    }
}

/// What stays the same over every run of the invocation.
struct Setup {
    bin: PathBuf,
    /// Holds the catalog and the job files.
    dir: tempfile::TempDir,
    catalog: PathBuf,
    pool: Pool,
    keys: Keys,
    /// The processes listening on the `--cassandra` contact points.
    nodes: Vec<u32>,
    /// Makes the Cassandra job names of this invocation its own.
    stamp: u64,
}

/// A job file like `jobs/cassandra.toml`, under `name`.
fn job_file(name: &str, hosts: &str) -> String {
    format!(
        "# Written by bench/query.rs: one job name per run (a name already committed\n\
         # would resume).\n\
         name = \"{name}\"\n\n[source]\nkind = \"log\"\npartitions = {LOG_PARTITIONS}\n\n[sink]\nkind = \"cassandra\"\nhosts = \"{hosts}\"\n\
         keyspace = \"{KEYSPACE}\"\nreplication_factor = 1\nconsistency = \"quorum\"\nserial_consistency = \"serial\"\n"
    )
}

/// One run of `store`: a fresh server, the paced ingest load, the wait for
/// committed rows on every queried path, the query interval, the stop.
fn run_once(args: &Args, setup: &Setup, store: Store, run: usize) -> Result<Sample, String> {
    let mut extra: Vec<OsString> = vec!["--catalog".into(), setup.catalog.clone().into()];
    if let (Store::Cassandra, Some(hosts)) = (store, &args.cassandra) {
        let job = setup.dir.path().join(format!("cassandra-{run}.toml"));
        std::fs::write(&job, job_file(&format!("query_{}_{run}", setup.stamp), hosts)).map_err(|e| format!("{}: {e}", job.display()))?;
        extra.extend(["--job".into(), job.into_os_string(), "--cassandra".into(), hosts.into()]);
    }
    let mut server = Server::start(&setup.bin, Mode::Up, args.workers, DEFAULT_MAX_INFLIGHT, &extra)?;
    let addr = server.addr;
    let every = Duration::from_secs_f64((BATCH_CLICKS * INGEST_CONNECTIONS) as f64 / args.rate_per_s as f64);
    let started = Instant::now();
    // Only a bound (every acknowledgement counts): the load stops when the
    // queries do, and the ingested rate is read from the server.
    let window = (started, started + 2 * FIRST_ROWS_TIMEOUT + Duration::from_secs(args.seconds));
    let (start_ms, stop) = (setup.pool.start_ms, AtomicBool::new(false));
    let (measured, ingest) = std::thread::scope(|scope| {
        let loaders: Vec<_> = bodies(&setup.pool, Shape::BatchJson, INGEST_CONNECTIONS)
            .into_iter()
            .map(|b| {
                let stop = &stop;
                scope.spawn(move || load_until(addr, Shape::BatchJson, b, start_ms, window, Some(every), stop))
            })
            .collect();
        let measured = measure(args, setup, &mut server);
        stop.store(true, Ordering::Relaxed);
        let ingest = loaders.into_iter().try_fold(Load::default(), |mut all, loader| {
            all.merge(loader.join().map_err(|_| "ingest thread panicked".to_owned())?);
            Ok::<_, String>(all)
        });
        (measured, ingest)
    });
    let mut sample = measured?;
    sample.ingest = ingest?;
    server.stop()?;
    Ok(sample)
}

/// Waits until every queried path shows committed rows, then runs the
/// query clients for `--seconds` and reads the counters around them.
fn measure(args: &Args, setup: &Setup, server: &mut Server) -> Result<Sample, String> {
    let stat = format!("/proc/{}/stat", server.pid());
    let mut client = HttpClient::new(server.addr, None);
    wait_for_rows(server, &mut client, &setup.keys)?;
    let (accepted_before, _) = ingest_stats(&mut client)?;
    let before = Usage::read(&stat, &setup.nodes);
    let start = Instant::now();
    let end = start + Duration::from_secs(args.seconds);
    let (addr, keys) = (server.addr, &setup.keys);
    let per_client = std::thread::scope(|scope| {
        let clients: Vec<_> = (0..args.query_clients).map(|i| scope.spawn(move || query_client(addr, keys, i, end))).collect();
        clients.into_iter().map(|c| c.join().map_err(|_| "query client panicked".to_owned())).collect::<Result<Vec<_>, _>>()
    })?;
    let interval = start.elapsed();
    let after = Usage::read(&stat, &setup.nodes);
    if interrupted() {
        return Err("interrupted".to_owned());
    }
    let (accepted_after, lag_ms) = ingest_stats(&mut client)?;
    server.check_alive()?;
    let mut routes: Vec<RouteLoad> = ROUTES.iter().map(|_| RouteLoad::default()).collect();
    for client in &per_client {
        routes.iter_mut().zip(client).for_each(|(all, one)| all.merge(one));
    }
    Ok(Sample {
        interval,
        routes,
        ingested: accepted_after.saturating_sub(accepted_before),
        lag_ms,
        server_cpu: after.server.saturating_sub(before.server),
        client_cpu: after.client.saturating_sub(before.client),
        nodes_cpu: after.nodes.saturating_sub(before.nodes),
        busy: after.busy.saturating_sub(before.busy),
        // The caller's, once the ingest connections have stopped.
        ingest: Load::default(),
    })
}

/// Polls every path the query clients ask for until each has answered 200
/// with rows: the first epochs hold rows of some ads only.
fn wait_for_rows(server: &mut Server, client: &mut HttpClient, keys: &Keys) -> Result<(), String> {
    let mut pending: Vec<(Route, String)> = ROUTES
        .iter()
        .flat_map(|&route| {
            let ids = match route {
                Route::Ad => keys.ads.len(),
                Route::Campaign => keys.campaigns.len(),
                Route::Top | Route::Late => 1,
            };
            (0..ids).map(move |n| (route, route.path(keys, n)))
        })
        .collect();
    let deadline = Instant::now() + FIRST_ROWS_TIMEOUT;
    loop {
        let next = Instant::now() + FIRST_ROWS_POLL;
        pending.retain(|(route, path)| !client.get(path).is_ok_and(|reply| reply.status == 200 && route.has_rows(&reply.json())));
        if pending.is_empty() {
            return Ok(());
        }
        server.check_alive()?;
        if next >= deadline {
            return Err(format!(
                "{} path(s) without committed rows {} s after the start, e.g. {}:\n{}",
                pending.len(),
                FIRST_ROWS_TIMEOUT.as_secs(),
                pending[0].1,
                server.tail()
            ));
        }
        sleep_until(next)?;
    }
}

/// Clicks ingest has accepted, and the watermark lag (`/v1/stats`).
fn ingest_stats(client: &mut HttpClient) -> Result<(u64, Option<u64>), String> {
    let reply = client.get("/v1/stats").map_err(|e| format!("/v1/stats: {e}"))?;
    let stats = reply.json();
    match stats["ingest"]["accepted"].as_u64() {
        Some(accepted) if reply.status == 200 => Ok((accepted, stats["watermark_lag_ms"].as_u64())),
        _ => Err(format!("/v1/stats: {}: {}", reply.status, reply.text())),
    }
}

/// One closed-loop client: the routes in turn (client `first` starts at
/// route `first`), the next request as soon as an answer is read, until `end`.
fn query_client(addr: SocketAddr, keys: &Keys, first: usize, end: Instant) -> Vec<RouteLoad> {
    let mut client = HttpClient::new(addr, None);
    let mut out: Vec<RouteLoad> = ROUTES.iter().map(|_| RouteLoad::default()).collect();
    for n in first.. {
        if Instant::now() >= end || interrupted() {
            break;
        }
        let (route, seen) = (ROUTES[n % ROUTES.len()], &mut out[n % ROUTES.len()]);
        let sent = Instant::now();
        let reply = client.get(&route.path(keys, n / ROUTES.len()));
        let took = sent.elapsed();
        match reply {
            Ok(reply) if reply.status == 200 => {
                seen.latencies_us.push(took.as_micros().min(u128::from(u32::MAX)) as u32);
                if route.has_rows(&reply.json()) {
                    seen.with_rows += 1;
                } else {
                    seen.without_rows += 1;
                }
            }
            Ok(reply) => {
                seen.errors += 1;
                seen.first_problem.get_or_insert_with(|| format!("{}: {}", reply.status, reply.text()));
                std::thread::sleep(ERROR_PAUSE);
            }
            Err(e) => {
                seen.errors += 1;
                seen.first_problem.get_or_insert_with(|| format!("connection: {e}"));
                std::thread::sleep(ERROR_PAUSE);
            }
        }
    }
    out
}

/// The processes listening on the contact points (IPv4 `host:port` of this
/// machine): the Cassandra nodes whose CPU time a run reports apart.
fn listener_pids(hosts: &str) -> Vec<u32> {
    let wanted: Vec<String> = hosts
        .split(',')
        .filter_map(|host| host.trim().to_socket_addrs().ok()?.find_map(|a| if let SocketAddr::V4(a) = a { Some(a) } else { None }))
        .map(|a| format!("{:08X}:{:04X}", u32::from_le_bytes(a.ip().octets()), a.port()))
        .collect();
    let sockets: Vec<String> = std::fs::read_to_string("/proc/net/tcp")
        .unwrap_or_default()
        .lines()
        .skip(1)
        .filter_map(|line| {
            // sl, local_address, rem_address, st (0A: listening), …, inode.
            let fields: Vec<&str> = line.split_whitespace().collect();
            let listening = fields.get(3) == Some(&"0A") && wanted.iter().any(|w| Some(&w.as_str()) == fields.get(1));
            listening.then(|| fields.get(9).map(|inode| format!("socket:[{inode}]"))).flatten()
        })
        .collect();
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|name| name.parse::<u32>().ok()) else { continue };
        let fds = std::fs::read_dir(entry.path().join("fd")).into_iter().flatten().flatten();
        if fds.filter_map(|fd| std::fs::read_link(fd.path()).ok()).any(|link| sockets.iter().any(|s| link.as_os_str() == s.as_str())) {
            pids.push(pid);
        }
    }
    pids
}

// ---- the runs, then the tables ------------------------------------------------------

/// The `TALLY` binary if set (`run-cassandra.sh` passes its own), else
/// the release build next to this bench.
fn tally() -> Result<PathBuf, String> {
    match std::env::var_os("TALLY") {
        Some(path) if PathBuf::from(&path).is_file() => Ok(path.into()),
        Some(path) => Err(format!("TALLY={}: not a file", PathBuf::from(path).display())),
        None => tally_binary(),
    }
}

fn parent(args: &Args) -> Result<bool, String> {
    let bin = tally()?;
    let dir = tempfile::Builder::new().prefix("tally-bench-query").tempdir().map_err(|e| format!("tempdir: {e}"))?;
    let catalog = dir.path().join("ads.csv");
    let mut csv = Vec::new();
    write_catalog(&GeneratorConfig::default(), &mut csv).map_err(|e| format!("catalog: {e}"))?;
    std::fs::write(&catalog, &csv).map_err(|e| format!("{}: {e}", catalog.display()))?;
    let clicks = (args.rate_per_s * POOL_SECONDS).clamp(2 * (BATCH_CLICKS * INGEST_CONNECTIONS) as u64, MAX_POOL_CLICKS);
    eprintln!("query: rendering {clicks} clicks into request bodies ...");
    let pool = Pool::render_at(clicks, args.rate_per_s)?;
    let keys = Keys::of(&pool, &String::from_utf8_lossy(&csv))?;
    let nodes = args.cassandra.as_deref().map(listener_pids).unwrap_or_default();
    if args.cassandra.is_some() && nodes.is_empty() {
        eprintln!("query: note: no process of this machine listens on the --cassandra hosts: the nodes' CPU counts as other load");
    }
    let setup = Setup { bin, dir, catalog, pool, keys, nodes, stamp: now_ms() / 1_000 };
    let stores: Vec<Store> = STORES.into_iter().filter(|s| *s == Store::Embedded || args.cassandra.is_some()).collect();
    if args.cassandra.is_none() {
        eprintln!("query: note: the cassandra row is skipped (no --cassandra HOSTS)");
    }
    let mut samples: Vec<Vec<Sample>> = stores.iter().map(|_| Vec::new()).collect();
    for run in 1..=args.runs {
        for (store, samples) in stores.iter().zip(&mut samples) {
            eprintln!(
                "query: run {run}/{}: {}: {} clicks/s of ingest, {} s of queries from {} client(s) ...",
                args.runs,
                store.label(),
                args.rate_per_s,
                args.seconds,
                args.query_clients
            );
            samples.push(run_once(args, &setup, *store, run)?);
        }
    }
    Ok(print_report(args, &setup, &stores, &samples))
}

/// Milliseconds of a latency in µs.
fn ms(us: u32) -> f64 {
    f64::from(us) / 1e3
}

/// Prints a table per row and the lines for scripts; returns whether every
/// route of every row answered 200 with rows at least once.
fn print_report(args: &Args, setup: &Setup, stores: &[Store], samples: &[Vec<Sample>]) -> bool {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let load_average = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!();
    println!(
        "tally query API under ingest load: {} clicks/s (batches of {BATCH_CLICKS}, JSON array, {INGEST_CONNECTIONS} paced keep-alive connections), \
         {} closed-loop query clients for {} s once every queried path shows committed rows; {} run(s) per row, interleaved, fresh data dir per run; \
         `tally up -w {}`; {cores} cores; load average {}",
        args.rate_per_s,
        args.query_clients,
        args.seconds,
        args.runs,
        args.workers,
        load_average.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
    );
    println!(
        "ids: {} most clicked ads ({}), their {} campaign(s)",
        setup.keys.ads.len(),
        setup.keys.ads.join(", "),
        setup.keys.campaigns.len()
    );
    let mut all_ok = true;
    let mut headline: Vec<(Store, u32, u32)> = Vec::new();
    for (store, samples) in stores.iter().zip(samples) {
        println!();
        println!("{}: {}", store.label(), store.describe());
        println!("| route | requests | requests/s | p50 ms | p99 ms | max ms | errors | 200 without rows |");
        println!("|---|---|---|---|---|---|---|---|");
        let seconds: f64 = samples.iter().map(|s| s.interval.as_secs_f64()).sum();
        let mut pooled: Vec<RouteLoad> = ROUTES.iter().map(|_| RouteLoad::default()).collect();
        for sample in samples {
            pooled.iter_mut().zip(&sample.routes).for_each(|(all, one)| all.merge(one));
        }
        let mut all = RouteLoad::default();
        pooled.iter().for_each(|route| all.merge(route));
        let lines = std::iter::once(("all routes", &mut all)).chain(ROUTES.iter().map(|r| r.label()).zip(pooled.iter_mut()));
        for (label, seen) in lines {
            seen.latencies_us.sort_unstable();
            let l = &seen.latencies_us;
            println!(
                "| {label} | {} | {:.0} | {:.2} | {:.2} | {:.2} | {} | {} |",
                seen.requests(),
                seen.requests() as f64 / seconds,
                ms(percentile(l, 0.5)),
                ms(percentile(l, 0.99)),
                ms(l.last().copied().unwrap_or(0)),
                seen.errors,
                seen.without_rows
            );
        }
        headline.push((*store, percentile(&all.latencies_us, 0.5), percentile(&all.latencies_us, 0.99)));
        println!();
        println!("| run | requests/s | p50 ms | p99 ms | clicks/s ingested | watermark lag s at the end | tally CPU-s | Cassandra CPU-s | other load cores |");
        println!("|---|---|---|---|---|---|---|---|---|");
        for (run, sample) in samples.iter().enumerate() {
            let mut latencies = sample.all().latencies_us;
            latencies.sort_unstable();
            println!(
                "| {} | {:.0} | {:.2} | {:.2} | {} | {} | {:.2} | {} | {:.2} |",
                run + 1,
                sample.requests_per_s(),
                ms(percentile(&latencies, 0.5)),
                ms(percentile(&latencies, 0.99)),
                human(sample.ingested as f64 / sample.interval.as_secs_f64()),
                sample.lag_ms.map_or("–".to_owned(), |lag| format!("{:.1}", lag as f64 / 1e3)),
                sample.server_cpu.as_secs_f64(),
                if *store == Store::Cassandra { format!("{:.2}", sample.nodes_cpu.as_secs_f64()) } else { "–".to_owned() },
                sample.other_load()
            );
        }
        let rates: Vec<f64> = samples.iter().map(|s| s.ingested as f64 / s.interval.as_secs_f64()).collect();
        let (lo, hi) = min_max(&rates);
        println!("clicks/s ingested during the queries: {} ({}–{})", human(median(&rates)), human(lo), human(hi));
        for (route, seen) in ROUTES.iter().zip(&pooled) {
            if let Some(problem) = &seen.first_problem {
                eprintln!("query: {}: {}: first error: {}", store.label(), route.label(), problem.chars().take(300).collect::<String>());
            }
            if seen.with_rows == 0 {
                eprintln!("query: {}: {} never answered 200 with rows", store.label(), route.label());
                all_ok = false;
            }
        }
        for sample in samples {
            let refused: u64 = sample.ingest.refused.values().sum();
            if refused + sample.ingest.io_errors > 0 {
                eprintln!(
                    "query: {}: ingest: {refused} refused request(s), {} connection error(s); first: {}",
                    store.label(),
                    sample.ingest.io_errors,
                    sample.ingest.first_problem.as_deref().unwrap_or("-")
                );
            }
        }
    }
    println!();
    println!(
        "requests/s = answers (any status) ÷ the query interval; latency = request written until its reply is read, 200 answers only,"
    );
    println!(
        "pooled over every run of the row (nearest rank); errors = non-200 answers and connection errors. clicks/s ingested = ingest's"
    );
    println!("accepted counter (/v1/stats) over the interval; watermark lag = wall clock − committed epoch at its end. tally CPU-s = the");
    println!("server process over the interval (ingest, job, query API); other load = cores kept busy by anything but tally, this program");
    println!("and the Cassandra nodes (/proc/stat): runs with other load well above 0 are not comparable.");
    println!();
    for (store, p50, p99) in &headline {
        println!("{} query p50 ms: {:.2}", store.label(), ms(*p50));
        println!("{} query p99 ms: {:.2}", store.label(), ms(*p99));
    }
    if let [(_, _, embedded), (_, _, cassandra)] = headline[..] {
        println!("ratio query p99 cassandra/embedded: {:.2}", f64::from(cassandra) / f64::from(embedded.max(1)));
    }
    if args.smoke && all_ok {
        eprintln!("query: smoke: every route answered 200 with rows");
    }
    all_ok
}
