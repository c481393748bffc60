//! tally and its peers side by side, on this machine, in one invocation.
//!
//! A program, not a timed test (see `bench/README.md`): it prints tables,
//! ratios and closing lines for scripts, and never asserts on a timing.
//! `bench/run.sh` builds everything, runs it, and draws the plot from the
//! JSON it writes.
//!
//! Comparisons, each run `--runs` times, interleaved (run 1 of every row,
//! then run 2, …) so that a disturbance of the machine hits every engine:
//!
//! - **core**: the default clicks job (10k ads, a viral ad, 1M users, 2 %
//!   retries, 1m/5m/1h windows per ad, campaign and advertiser, clicks and
//!   distinct users, dedup on) on clicks generated inside the run, nothing
//!   durable. tally: the generator source and the memory sink; peers, all
//!   in `bench/flink` (Flink 2.x): the DataStream job an expert would write
//!   (retries dropped inside the source split, one fold per click, roll-up),
//!   the same with the common keyed dedup (keyed state with a TTL), and the
//!   Flink SQL job, straightforward but tuned as far as SQL allows.
//! - **checkpointed**: the same with exactly-once state. tally: every epoch
//!   (1 s of event time) commits rows, window state and source offsets to
//!   the embedded store on disk; the Flink jobs: exactly-once checkpoints
//!   every 2 s (hashmap state backend, filesystem storage).
//! - **batch**: a day's clicks in an NDJSON file and the catalog in a CSV
//!   file, computed once: `tally run FILE` (and `tally run --bounded` on the
//!   embedded log) against DuckDB and chDB (ClickHouse in process), 2
//!   threads each, reading included, through `bench/run-batch.sh`, which
//!   checks that every peer's clicks equal tally's rows.
//! - **end to end**: `tally up` on embedded defaults: HTTP batches → log →
//!   job → store, loaded twice: as fast as it acknowledges (its capacity),
//!   and paced at the product's peak of 1M clicks/s; probe clicks measure
//!   freshness in both (no Flink row: that needs a Kafka source).
//! - **memory** (tally): the checkpointed job at 1M clicks/s of event time
//!   for longer than the dedup horizon, with a 60 s and a 1 s horizon; the
//!   difference in peak RSS over the difference in remembered ids is what a
//!   remembered request id costs.
//!
//! A comparison is a [`Comparison`] with a tally side and, where peers run
//! the same thing, their sides: [`FLINK_PEERS`], [`BATCH_ENGINES`].
//!
//! Each tally run is a child process (this program re-invoked with the
//! hidden `--child`), so its peak RSS (`VmHWM`) is its own; each Flink run
//! is `bench/flink/run.sh --runs 1`, a fresh JVM; each batch round is
//! `bench/run-batch.sh --runs 1`, a fresh process per engine.
//!
//! Usage: `cargo bench --bench compare -- [--runs R] [--clicks N] [--rate R]
//! [--e2e-seconds S] [--memory-seconds S] [--only LIST] [--no-flink]
//! [--json PATH] [--smoke]`

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::http_load::{self, Mode, Pool, Row, Shape, Timing};
use common::{at_most, cpu_time, human, machine_busy, median, min_max, number, peak_rss_kb, percentile};
use serde_json::{json, Value};
use tally::datadir::DataDir;
use tally::job::{Job, SinkSpec, SourceSpec};
use tally::run::{run, RunOptions};
use tally::sources::generator::GeneratorConfig;

const DEFAULT_RUNS: usize = 3;
const DEFAULT_CLICKS: u64 = 5_000_000;
const SMOKE_CLICKS: u64 = 200_000;
/// Event-time rate of the generated clicks: the product's peak load.
const DEFAULT_RATE_PER_S: u64 = 1_000_000;
const ADS: u32 = 10_000;
/// Workers of the tally job and Flink's parallelism: the machine's cores.
const DEFAULT_PARALLELISM: usize = 2;
const DEFAULT_E2E_SECONDS: u64 = 10;
const SMOKE_E2E_SECONDS: u64 = 2;
const E2E_CONNECTIONS: usize = 16;
/// Job workers of `tally up`: its own default.
const E2E_WORKERS: usize = 1;
/// Event time the memory runs cover: past the 60 s horizon, so the dedup
/// memory reaches its steady state.
const DEFAULT_MEMORY_SECONDS: u64 = 75;
const SMOKE_MEMORY_SECONDS: u64 = 2;
const MEMORY_HORIZONS_MS: [u64; 2] = [1_000, 60_000];
/// Fewer ids apart than this, and RSS noise (allocator, page cache of the
/// store) would swamp the difference: no figure.
const MIN_IDS_APART: f64 = 5e6;
const MAX_RUNS: usize = 100;
const MAX_CLICKS: u64 = 1_000_000_000;

/// The comparisons, in the order they run and print.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Comparison {
    Core,
    Checkpointed,
    Batch,
    EndToEnd,
    Memory,
}

const COMPARISONS: [Comparison; 5] =
    [Comparison::Core, Comparison::Checkpointed, Comparison::Batch, Comparison::EndToEnd, Comparison::Memory];

impl Comparison {
    fn name(self) -> &'static str {
        match self {
            Comparison::Core => "core",
            Comparison::Checkpointed => "checkpointed",
            Comparison::Batch => "batch",
            Comparison::EndToEnd => "e2e",
            Comparison::Memory => "memory",
        }
    }

    fn parse(name: &str) -> Option<Comparison> {
        COMPARISONS.into_iter().find(|c| c.name() == name)
    }

    /// The mode of `bench/flink/run.sh` that runs the same thing, if any.
    fn flink_mode(self) -> Option<&'static str> {
        match self {
            Comparison::Core => Some("core"),
            Comparison::Checkpointed => Some("checkpointed"),
            Comparison::Batch | Comparison::EndToEnd | Comparison::Memory => None,
        }
    }
}

/// A Flink job that runs the core and checkpointed comparisons' work: one
/// `--job` of `bench/flink/run.sh`, strongest first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FlinkPeer {
    /// DataStream, retries dropped inside the source split.
    DataStream,
    /// DataStream, retries dropped in keyed state with a TTL.
    DataStreamKeyed,
    /// Flink SQL, straightforward (tuned as far as SQL allows).
    Sql,
}

const FLINK_PEERS: [FlinkPeer; 3] = [FlinkPeer::DataStream, FlinkPeer::DataStreamKeyed, FlinkPeer::Sql];

impl FlinkPeer {
    /// The name in ratio lines (`ratio core tally/NAME: X`).
    fn name(self) -> &'static str {
        match self {
            FlinkPeer::DataStream => "flink-datastream",
            FlinkPeer::DataStreamKeyed => "flink-datastream-keyed",
            FlinkPeer::Sql => "flink-sql",
        }
    }

    /// Its `bench/flink/run.sh` flags.
    fn flags(self) -> &'static [&'static str] {
        match self {
            FlinkPeer::DataStream => &["--job", "datastream", "--dedup", "split"],
            FlinkPeer::DataStreamKeyed => &["--job", "datastream", "--dedup", "keyed"],
            FlinkPeer::Sql => &["--job", "sql"],
        }
    }

    /// How `bench/flink/run.sh` begins its closing lines for this job.
    fn prefix(self) -> &'static str {
        match self {
            FlinkPeer::DataStream => "flink-datastream",
            FlinkPeer::DataStreamKeyed => "flink-datastream-keyed",
            FlinkPeer::Sql => "flink",
        }
    }

    fn label(self) -> &'static str {
        match self {
            FlinkPeer::DataStream => "DataStream, dedup in the source split",
            FlinkPeer::DataStreamKeyed => "DataStream, keyed dedup with TTL",
            FlinkPeer::Sql => "SQL, straightforward",
        }
    }
}

/// The engines `bench/run-batch.sh` runs, as it names them in its
/// `times.tsv`: tally first (the ratios are against its first line).
const BATCH_ENGINES: [(&str, &str); 4] =
    [("tally run FILE", "tally run FILE"), ("tally run --bounded (log)", "tally run --bounded"), ("duckdb", "DuckDB"), ("chdb", "chDB")];

/// Command-line settings.
#[derive(Clone, Debug)]
struct Args {
    runs: usize,
    clicks: u64,
    rate_per_s: u64,
    parallelism: usize,
    e2e_seconds: u64,
    memory_seconds: u64,
    only: Vec<Comparison>,
    flink: bool,
    json: Option<PathBuf>,
    smoke: bool,
    child: Option<Child>,
}

/// A tally run in a child process.
#[derive(Clone, Debug)]
enum Child {
    /// The core job: generator source, memory sink.
    Core,
    /// Generator source, store sink in this data directory.
    Checkpointed(PathBuf),
    /// Like `Checkpointed`, with this dedup horizon (ms).
    Memory(PathBuf, u64),
}

const USAGE: &str = "usage: compare [--runs R] [--clicks N] [--rate R] [--parallelism P] [--e2e-seconds S] [--memory-seconds S] \
                     [--only core,checkpointed,batch,e2e,memory] [--no-flink] [--json PATH] [--smoke]";

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        runs: DEFAULT_RUNS,
        clicks: DEFAULT_CLICKS,
        rate_per_s: DEFAULT_RATE_PER_S,
        parallelism: DEFAULT_PARALLELISM,
        e2e_seconds: DEFAULT_E2E_SECONDS,
        memory_seconds: DEFAULT_MEMORY_SECONDS,
        only: COMPARISONS.to_vec(),
        flink: true,
        json: None,
        smoke: false,
        child: None,
    };
    let (mut runs, mut clicks, mut e2e, mut memory) = (None, None, None, None);
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        match flag.as_str() {
            "--runs" => runs = Some(number(&flag, it.next())? as usize),
            "--clicks" => clicks = Some(number(&flag, it.next())?),
            "--rate" => args.rate_per_s = number(&flag, it.next())?.max(1),
            "--parallelism" => args.parallelism = number(&flag, it.next())? as usize,
            "--e2e-seconds" => e2e = Some(number(&flag, it.next())?),
            "--memory-seconds" => memory = Some(number(&flag, it.next())?),
            "--only" => {
                let list = it.next().ok_or("--only: missing value")?;
                args.only = list
                    .split(',')
                    .map(|name| Comparison::parse(name).ok_or_else(|| format!("--only: unknown comparison {name:?}; {USAGE}")))
                    .collect::<Result<_, _>>()?;
            }
            "--no-flink" => args.flink = false,
            "--json" => args.json = Some(it.next().ok_or("--json: missing path")?.into()),
            "--smoke" => args.smoke = true,
            "--child" => args.child = Some(parse_child(&mut it)?),
            // `cargo bench` passes `--bench` to harness-less benches.
            "--bench" => {}
            other => return Err(format!("unknown argument {other:?}; {USAGE}")),
        }
    }
    args.runs = runs.unwrap_or(if args.smoke { 1 } else { DEFAULT_RUNS });
    args.clicks = clicks.unwrap_or(if args.smoke { SMOKE_CLICKS } else { DEFAULT_CLICKS });
    args.e2e_seconds = e2e.unwrap_or(if args.smoke { SMOKE_E2E_SECONDS } else { DEFAULT_E2E_SECONDS });
    args.memory_seconds = memory.unwrap_or(if args.smoke { SMOKE_MEMORY_SECONDS } else { DEFAULT_MEMORY_SECONDS });
    at_most("--runs", args.runs, MAX_RUNS)?;
    at_most("--clicks", args.clicks, MAX_CLICKS)?;
    at_most("--parallelism", args.parallelism, tally::run::MAX_WORKERS)?;
    if !(1..=600).contains(&args.e2e_seconds) || !(1..=600).contains(&args.memory_seconds) {
        return Err("--e2e-seconds and --memory-seconds: must be in 1..=600".to_owned());
    }
    Ok(args)
}

fn parse_child(it: &mut impl Iterator<Item = String>) -> Result<Child, String> {
    let kind = it.next().ok_or("--child: missing kind")?;
    match kind.as_str() {
        "core" => Ok(Child::Core),
        "checkpointed" => Ok(Child::Checkpointed(it.next().ok_or("--child checkpointed: missing DIR")?.into())),
        "memory" => {
            let dir = it.next().ok_or("--child memory: missing DIR")?.into();
            Ok(Child::Memory(dir, number("--child memory", it.next())?))
        }
        other => Err(format!("--child: unknown kind {other:?}")),
    }
}

fn main() {
    let args = match parse_args() {
        Ok(args) => args,
        Err(message) => {
            eprintln!("compare: {message}");
            std::process::exit(2);
        }
    };
    let result = match &args.child {
        Some(child) => run_child(child, &args),
        None => http_load::register_signals().and_then(|()| parent(&args)),
    };
    if let Err(message) = result {
        eprintln!("compare: {message}");
        std::process::exit(1);
    }
}

// ---- tally runs (child processes) ------------------------------------------------------

/// The clicks of a tally run: the generator's defaults, whose distributions
/// Flink's source copies, without idle partitions (Flink's source has none).
fn generator(clicks: u64, rate_per_s: u64) -> GeneratorConfig {
    GeneratorConfig { clicks, ads: ADS, rate_per_s, idle_partitions: 0, ..GeneratorConfig::default() }
}

fn tally_job(child: &Child, args: &Args) -> Job {
    let mut job = Job::defaults(Path::new("bench-compare.toml"));
    let clicks = match child {
        Child::Memory(..) => args.memory_seconds * DEFAULT_RATE_PER_S,
        _ => args.clicks,
    };
    let rate = if matches!(child, Child::Memory(..)) { DEFAULT_RATE_PER_S } else { args.rate_per_s };
    job.source = SourceSpec::Generator(generator(clicks, rate));
    job.sink = match child {
        Child::Core => SinkSpec::Memory,
        Child::Checkpointed(_) | Child::Memory(..) => SinkSpec::Store,
    };
    if let Child::Memory(_, horizon_ms) = child {
        job.dedup_horizon_ms = *horizon_ms;
    }
    job
}

/// Runs one tally job and prints one `tally …` line of figures.
fn run_child(child: &Child, args: &Args) -> Result<(), String> {
    let job = tally_job(child, args);
    let data_dir = match child {
        Child::Core => DataDir::default(),
        Child::Checkpointed(dir) | Child::Memory(dir, _) => DataDir::new(dir),
    };
    let options = RunOptions { workers: args.parallelism, data_dir, ..RunOptions::default() };
    let cpu_before = cpu_time("/proc/self/stat");
    let report = run(&job, &options).map_err(|e| format!("tally run: {e}"))?;
    let cpu = cpu_time("/proc/self/stat").saturating_sub(cpu_before);
    println!(
        "tally clicks={} elapsed_ns={} cpu_ns={} remembered_max={} peak_rss_kb={}",
        report.stats.read_total(),
        report.elapsed.as_nanos(),
        cpu.as_nanos(),
        report.stats.remembered_max,
        peak_rss_kb("/proc/self/status").unwrap_or(0)
    );
    Ok(())
}

/// What one run of either engine measured.
#[derive(Clone, Debug, Default)]
struct Sample {
    events_per_s: f64,
    /// CPU seconds of the whole process (tally) or JVM (Flink) per 1M clicks.
    cpu_per_million: f64,
    peak_rss_mib: f64,
    /// Cores other processes kept busy meanwhile.
    other_load: f64,
    /// tally: the most request ids remembered at once.
    remembered_max: u64,
    /// Flink, checkpointed: checkpoints completed.
    checkpoints: Option<f64>,
}

fn field<T: std::str::FromStr>(line: &str, key: &str) -> Option<T> {
    line.split(' ').find_map(|f| f.strip_prefix(key)?.strip_prefix('=')?.parse().ok())
}

/// Runs a tally child and reads its line.
fn tally_sample(child: &[String], args: &Args) -> Result<Sample, String> {
    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    let (busy_before, started) = (machine_busy(), Instant::now());
    let output = Command::new(exe)
        .arg("--child")
        .args(child)
        .args(["--clicks", &args.clicks.to_string(), "--rate", &args.rate_per_s.to_string()])
        .args(["--parallelism", &args.parallelism.to_string(), "--memory-seconds", &args.memory_seconds.to_string()])
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| format!("tally child: {e}"))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout.lines().find(|l| l.starts_with("tally ")).unwrap_or_default();
    let parsed =
        (field::<u64>(line, "clicks"), field::<u64>(line, "elapsed_ns"), field::<u64>(line, "cpu_ns"), field::<u64>(line, "peak_rss_kb"));
    let (Some(clicks), Some(elapsed_ns), Some(cpu_ns), Some(rss_kb)) = parsed else {
        return Err(format!("tally child {child:?} failed ({}):\n{stdout}{}", output.status, String::from_utf8_lossy(&output.stderr)));
    };
    let wall = started.elapsed();
    let others = machine_busy().saturating_sub(busy_before).saturating_sub(Duration::from_nanos(cpu_ns));
    Ok(Sample {
        events_per_s: clicks as f64 / (elapsed_ns as f64 / 1e9),
        cpu_per_million: cpu_ns as f64 / 1e9 / clicks.max(1) as f64 * 1e6,
        peak_rss_mib: rss_kb as f64 / 1024.0,
        other_load: others.as_secs_f64() / wall.as_secs_f64(),
        remembered_max: field(line, "remembered_max").unwrap_or(0),
        checkpoints: None,
    })
}

// ---- Flink runs ------------------------------------------------------------------------

fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// One `bench/flink/run.sh --runs 1` of `peer` in `mode`, read from its closing lines.
fn flink_sample(peer: FlinkPeer, mode: &str, args: &Args) -> Result<(Sample, String), String> {
    let script = repo_root().join("bench/flink/run.sh");
    let mut command = Command::new("bash");
    command.arg(&script).args(peer.flags()).args(["--mode", mode, "--parallelism", &args.parallelism.to_string()]);
    if args.smoke {
        command.arg("--smoke");
    } else {
        command.args(["--runs", "1", "--clicks", &args.clicks.to_string(), "--rate-per-s", &args.rate_per_s.to_string()]);
    }
    let output = command.stdin(Stdio::null()).stderr(Stdio::piped()).output().map_err(|e| format!("{}: {e}", script.display()))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let value = |key: &str| -> Option<String> {
        let prefix = format!("{} {mode} {key}: ", peer.prefix());
        stdout.lines().find_map(|l| l.strip_prefix(&prefix).map(str::to_owned))
    };
    let number = |key: &str| value(key).and_then(|v| v.parse::<f64>().ok());
    let (Some(clicks), Some(eps), Some(cpu), Some(rss), true) =
        (number("clicks"), number("events/s"), number("cpu s"), number("peak rss mib"), output.status.success())
    else {
        return Err(format!(
            "bench/flink/run.sh {} --mode {mode} failed ({}):\n{stdout}{}",
            peer.flags().join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr)
        ));
    };
    let sample = Sample {
        events_per_s: eps,
        cpu_per_million: cpu / clicks.max(1.0) * 1e6,
        peak_rss_mib: rss,
        other_load: number("other load cores").unwrap_or(0.0),
        remembered_max: 0,
        checkpoints: number("checkpoints"),
    };
    Ok((sample, value("version").unwrap_or_else(|| "?".to_owned())))
}

// ---- batch runs ------------------------------------------------------------------------

/// One `bench/run-batch.sh --runs 1`: every engine of [`BATCH_ENGINES`] once
/// on the same NDJSON file (it checks their clicks equal and fails if not),
/// read back from the `times.tsv` it writes. It measures `bin`: a cargo
/// build started from here would see `cargo bench`'s `CARGO_PKG_*`
/// variables, run build scripts again and relink tally.
fn batch_samples(bin: &Path, args: &Args) -> Result<Vec<(&'static str, Sample)>, String> {
    let script = repo_root().join("bench/run-batch.sh");
    let out = repo_root().join("target").join("bench-compare").join("batch");
    let mut command = Command::new("bash");
    command.arg(&script).arg("--out").arg(&out).env("TALLY", bin);
    if args.smoke {
        command.arg("--smoke");
    } else {
        command.args(["--runs", "1", "--clicks", &args.clicks.to_string()]);
    }
    let (busy_before, started) = (machine_busy(), Instant::now());
    let output = command.stdin(Stdio::null()).stderr(Stdio::piped()).output().map_err(|e| format!("{}: {e}", script.display()))?;
    let wall = started.elapsed();
    if !output.status.success() {
        return Err(format!(
            "bench/run-batch.sh failed ({}):\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    let times = std::fs::read_to_string(out.join("times.tsv")).map_err(|e| format!("{}/times.tsv: {e}", out.display()))?;
    let clicks = if args.smoke { SMOKE_CLICKS } else { args.clicks } as f64;
    let mut samples = Vec::new();
    let mut cpu_total = 0.0;
    for line in times.lines() {
        let cells: Vec<&str> = line.split('\t').collect();
        let [engine, _round, wall, user, sys, rss_kb] = cells[..] else { return Err(format!("times.tsv: unexpected line {line:?}")) };
        let figure = |cell: &str| cell.parse::<f64>().map_err(|_| format!("times.tsv: {cell:?} in {line:?} is not a number"));
        let Some(&(engine, _)) = BATCH_ENGINES.iter().find(|(name, _)| *name == engine) else { continue };
        let cpu = figure(user)? + figure(sys)?;
        cpu_total += cpu;
        samples.push((
            engine,
            Sample {
                events_per_s: clicks / figure(wall)?.max(1e-3),
                cpu_per_million: cpu / clicks * 1e6,
                peak_rss_mib: figure(rss_kb)? / 1024.0,
                other_load: 0.0,
                remembered_max: 0,
                checkpoints: None,
            },
        ));
    }
    // Other load over the whole script: what the measured processes did not use.
    let others = machine_busy().saturating_sub(busy_before).as_secs_f64() - cpu_total;
    for (_, sample) in &mut samples {
        sample.other_load = (others / wall.as_secs_f64()).max(0.0);
    }
    if samples.len() != BATCH_ENGINES.len() {
        return Err(format!("bench/run-batch.sh: times.tsv names {} of the {} engines", samples.len(), BATCH_ENGINES.len()));
    }
    Ok(samples)
}

// ---- end to end ------------------------------------------------------------------------

/// What one end-to-end run measured.
struct E2eSample {
    /// Clicks acknowledged in the measured interval ÷ (interval + drain).
    end_to_end: f64,
    acked_per_s: f64,
    cpu_per_million: f64,
    peak_rss_mib: f64,
    other_load: f64,
    visible_ms: Vec<u32>,
    final_ms: Vec<u32>,
    unseen: u64,
    problems: Vec<String>,
}

/// How an end-to-end run loads `tally up`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum E2eLoad {
    /// Each connection sends its next batch as soon as the last is answered.
    Max,
    /// The product's peak load, [`E2E_PACED_RATE_PER_S`], spread evenly.
    Paced,
}

/// The peak load the product is built for.
const E2E_PACED_RATE_PER_S: u64 = 1_000_000;

fn e2e_sample(bin: &Path, pool: &Pool, args: &Args, load: E2eLoad) -> Result<E2eSample, String> {
    let rate_per_s = (load == E2eLoad::Paced).then_some(E2E_PACED_RATE_PER_S);
    let row = Row { label: "e2e", shape: Shape::BatchJson, mode: Mode::Up, connections: E2E_CONNECTIONS, probe: true, rate_per_s };
    let smoke = args.smoke;
    let timing = Timing {
        warmup: Duration::from_millis(if smoke { 500 } else { 1_000 }),
        measure: Duration::from_secs(args.e2e_seconds),
        drain_limit: Duration::from_secs(if smoke { 10 } else { 60 }),
        workers: E2E_WORKERS,
    };
    let s = http_load::run_http(bin, pool, row, timing)?;
    let freshness = s.freshness.as_ref().ok_or("the probe did not run")?;
    Ok(E2eSample {
        end_to_end: s.load.window_clicks as f64 / (s.window + s.drain).as_secs_f64(),
        acked_per_s: s.clicks_per_s(),
        cpu_per_million: s.per_million(s.server_cpu + s.drain_cpu),
        peak_rss_mib: s.peak_rss_kb as f64 / 1024.0,
        other_load: s.other_load(),
        visible_ms: freshness.visible_ms.clone(),
        final_ms: freshness.final_ms.clone(),
        unseen: freshness.unseen,
        problems: s.problems(),
    })
}

// ---- parent: the runs, the tables, the JSON --------------------------------------------

/// Every figure of the invocation.
#[derive(Default)]
struct Results {
    tally: Vec<(Comparison, Vec<Sample>)>,
    flink: Vec<((Comparison, FlinkPeer), Vec<Sample>)>,
    flink_version: String,
    /// Per engine of [`BATCH_ENGINES`]: the batch runs.
    batch: Vec<(&'static str, Vec<Sample>)>,
    e2e: Vec<(E2eLoad, Vec<E2eSample>)>,
    /// Per horizon (ms): the memory runs.
    memory: Vec<(u64, Vec<Sample>)>,
}

impl Results {
    fn samples<K: PartialEq>(list: &mut Vec<(K, Vec<Sample>)>, key: K) -> &mut Vec<Sample> {
        if let Some(i) = list.iter().position(|(k, _)| *k == key) {
            return &mut list[i].1;
        }
        list.push((key, Vec::new()));
        &mut list.last_mut().expect("just pushed").1
    }

    fn get<K: PartialEq>(list: &[(K, Vec<Sample>)], key: K) -> Option<&[Sample]> {
        list.iter().find(|(k, _)| *k == key).map(|(_, s)| s.as_slice())
    }
}

/// A scratch data directory for a store run, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Result<Scratch, String> {
        // On the repository's disk (not a tmpfs), so commits are real fsyncs.
        let dir = repo_root().join("target").join("bench-compare").join(format!("{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        Ok(Scratch(dir))
    }

    fn arg(&self) -> String {
        self.0.display().to_string()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn parent(args: &Args) -> Result<(), String> {
    let bin = common::tally_binary()?;
    let wants = |c: Comparison| args.only.contains(&c);
    eprintln!(
        "compare: {} run(s) each, {} clicks at {} clicks/s of event time, parallelism {}{}{}",
        args.runs,
        args.clicks,
        args.rate_per_s,
        args.parallelism,
        if args.flink { "" } else { ", Flink skipped" },
        if args.smoke { " (smoke)" } else { "" }
    );
    let pool = if wants(Comparison::EndToEnd) { Some(Pool::render(if args.smoke { 50_000 } else { 500_000 })?) } else { None };
    let mut results = Results::default();
    for run in 1..=args.runs {
        for comparison in COMPARISONS.into_iter().filter(|c| wants(*c)) {
            let step = |engine: &str| eprintln!("compare: run {run}/{}: {} {engine} ...", args.runs, comparison.name());
            match comparison {
                Comparison::Core | Comparison::Checkpointed => {
                    step("tally");
                    let scratch = Scratch::new(comparison.name())?;
                    let child = match comparison {
                        Comparison::Core => vec!["core".to_owned()],
                        _ => vec!["checkpointed".to_owned(), scratch.arg()],
                    };
                    let sample = tally_sample(&child, args)?;
                    Results::samples(&mut results.tally, comparison).push(sample);
                    if let (true, Some(mode)) = (args.flink, comparison.flink_mode()) {
                        for peer in FLINK_PEERS {
                            step(&format!("Flink {}", peer.label()));
                            let (sample, version) = flink_sample(peer, mode, args)?;
                            results.flink_version = version;
                            Results::samples(&mut results.flink, (comparison, peer)).push(sample);
                        }
                    }
                }
                Comparison::Batch => {
                    step("tally run FILE, tally run --bounded, DuckDB, chDB (bench/run-batch.sh)");
                    for (engine, sample) in batch_samples(&bin, args)? {
                        Results::samples(&mut results.batch, engine).push(sample);
                    }
                }
                Comparison::EndToEnd => {
                    for load in [E2eLoad::Max, E2eLoad::Paced] {
                        step(&format!("tally up, {load:?} load"));
                        let sample = e2e_sample(&bin, pool.as_ref().expect("rendered for e2e"), args, load)?;
                        match results.e2e.iter_mut().find(|(l, _)| *l == load) {
                            Some((_, samples)) => samples.push(sample),
                            None => results.e2e.push((load, vec![sample])),
                        }
                    }
                }
                Comparison::Memory => {
                    for horizon_ms in MEMORY_HORIZONS_MS {
                        step(&format!("tally, dedup horizon {} s", horizon_ms / 1_000));
                        let scratch = Scratch::new("memory")?;
                        let sample = tally_sample(&["memory".to_owned(), scratch.arg(), horizon_ms.to_string()], args)?;
                        match results.memory.iter_mut().find(|(h, _)| *h == horizon_ms) {
                            Some((_, samples)) => samples.push(sample),
                            None => results.memory.push((horizon_ms, vec![sample])),
                        }
                    }
                }
            }
        }
    }
    let report = Report::new(&results, args);
    report.print(&results, args);
    if let Some(path) = &args.json {
        std::fs::write(path, report.json(&results, args)).map_err(|e| format!("{}: {e}", path.display()))?;
        eprintln!("compare: figures written to {}", path.display());
    }
    let problems: Vec<&String> = results.e2e.iter().flat_map(|(_, samples)| samples).flat_map(|s| &s.problems).collect();
    if !problems.is_empty() {
        return Err(format!("end to end: acknowledgements did not check out: {problems:?}"));
    }
    Ok(())
}

/// Median and min–max of a figure over runs.
#[derive(Clone, Copy, Debug, Default)]
struct Spread {
    median: f64,
    min: f64,
    max: f64,
}

impl Spread {
    fn of(values: &[f64]) -> Spread {
        if values.is_empty() {
            return Spread::default();
        }
        let (min, max) = min_max(values);
        Spread { median: median(values), min, max }
    }

    fn cell(self) -> String {
        format!("{} ({}–{})", human(self.median), human(self.min), human(self.max))
    }
}

/// The figures of one table row.
struct Line {
    comparison: Comparison,
    engine: String,
    events_per_s: Spread,
    cpu_per_million: f64,
    peak_rss_mib: f64,
    other_load: f64,
    /// p50 and p99, ms.
    freshness: Option<(u32, u32)>,
    note: String,
}

/// What the invocation prints and writes.
struct Report {
    lines: Vec<Line>,
    /// tally over each peer, events/s, per comparison: the peer's ratio-line name and the ratio.
    ratios: Vec<(Comparison, &'static str, Option<f64>)>,
    e2e: Option<Spread>,
    memory: Option<MemoryFigures>,
    machine: String,
    versions: String,
}

/// The memory comparison in numbers.
struct MemoryFigures {
    /// Per horizon: median peak RSS (MiB) and median most ids remembered.
    rows: Vec<(u64, f64, f64, f64)>,
    /// (RSS difference) ÷ (ids difference), bytes; `None` when the runs
    /// are too short for the horizons to differ by [`MIN_IDS_APART`] ids.
    bytes_per_id: Option<f64>,
    /// Peak RSS with the 1 s horizon, MiB: the job without its dedup memory.
    base_rss_mib: f64,
}

fn line_from(comparison: Comparison, engine: String, samples: &[Sample], note: String) -> Line {
    let of = |f: fn(&Sample) -> f64| samples.iter().map(f).collect::<Vec<f64>>();
    Line {
        comparison,
        engine,
        events_per_s: Spread::of(&of(|s| s.events_per_s)),
        cpu_per_million: median(&of(|s| s.cpu_per_million)),
        peak_rss_mib: of(|s| s.peak_rss_mib).into_iter().fold(0.0, f64::max),
        other_load: of(|s| s.other_load).into_iter().fold(0.0, f64::max),
        freshness: None,
        note,
    }
}

impl Report {
    fn new(results: &Results, args: &Args) -> Report {
        let mut lines = Vec::new();
        let mut ratios = Vec::new();
        for comparison in [Comparison::Core, Comparison::Checkpointed] {
            let Some(tally) = Results::get(&results.tally, comparison) else { continue };
            let note = match comparison {
                Comparison::Core => "generator source, memory sink".to_owned(),
                _ => "an epoch commit (rows, state, offsets) to the embedded store every 1 s of event time".to_owned(),
            };
            let tally_line = line_from(comparison, "tally".to_owned(), tally, note);
            let mut peers = Vec::new();
            for peer in FLINK_PEERS {
                let Some(flink) = Results::get(&results.flink, (comparison, peer)) else { continue };
                let checkpoints = flink.iter().filter_map(|s| s.checkpoints).collect::<Vec<_>>();
                let note = match comparison {
                    Comparison::Core => "in-JVM generator source, no sink work".to_owned(),
                    _ => format!("exactly-once checkpoints every 2 s, hashmap backend ({:.0} per run)", median(&checkpoints)),
                };
                let line = line_from(comparison, format!("Flink {} {}", results.flink_version, peer.label()), flink, note);
                ratios.push((comparison, peer.name(), Some(tally_line.events_per_s.median / line.events_per_s.median)));
                peers.push(line);
            }
            lines.push(tally_line);
            lines.extend(peers);
        }
        let batch = |engine: &'static str| Results::get(&results.batch, engine);
        if let Some(tally) = batch(BATCH_ENGINES[0].0) {
            let tally_eps = line_from(Comparison::Batch, String::new(), tally, String::new()).events_per_s.median;
            for (engine, label) in BATCH_ENGINES {
                let Some(samples) = batch(engine) else { continue };
                let note = match engine {
                    "tally run FILE" => "the NDJSON file, rows to a file",
                    "tally run --bounded (log)" => "the same clicks from the embedded log (imported first, not timed), rows to the store",
                    _ => "SQL in process from Python: the same NDJSON and catalog, result to a CSV file",
                };
                let line = line_from(Comparison::Batch, label.to_owned(), samples, format!("{note}, 2 threads"));
                if !engine.starts_with("tally") {
                    ratios.push((Comparison::Batch, engine, Some(tally_eps / line.events_per_s.median)));
                }
                lines.push(line);
            }
        }
        let mut e2e = None;
        for (load, samples) in &results.e2e {
            let of = |f: fn(&E2eSample) -> f64| samples.iter().map(f).collect::<Vec<f64>>();
            let mut visible: Vec<u32> = samples.iter().flat_map(|s| s.visible_ms.iter().copied()).collect();
            visible.sort_unstable();
            let acked = Spread::of(&of(|s| s.acked_per_s));
            let (engine, how) = match load {
                E2eLoad::Max => ("tally up".to_owned(), format!("{E2E_CONNECTIONS} connections, each sending as soon as answered")),
                E2eLoad::Paced => {
                    (format!("tally up at {}/s", human(E2E_PACED_RATE_PER_S as f64)), format!("paced over {E2E_CONNECTIONS} connections"))
                }
            };
            lines.push(Line {
                comparison: Comparison::EndToEnd,
                engine,
                events_per_s: Spread::of(&of(|s| s.end_to_end)),
                cpu_per_million: median(&of(|s| s.cpu_per_million)),
                peak_rss_mib: of(|s| s.peak_rss_mib).into_iter().fold(0.0, f64::max),
                other_load: of(|s| s.other_load).into_iter().fold(0.0, f64::max),
                freshness: Some((percentile(&visible, 0.5), percentile(&visible, 0.99))),
                note: format!(
                    "HTTP batches of 1,000, {how} → log → job (-w {E2E_WORKERS}) → store; {} acknowledged/s",
                    human(acked.median)
                ),
            });
            if *load == E2eLoad::Max {
                e2e = Some(Spread::of(&of(|s| s.end_to_end)));
            }
        }
        let memory = memory_figures(results);
        Report { lines, ratios, e2e, memory, machine: machine(), versions: versions(results, args) }
    }

    fn print(&self, results: &Results, args: &Args) {
        println!();
        println!("tally and its peers, one invocation: {}", self.machine);
        println!("{}", self.versions);
        println!(
            "job: {} clicks at {} clicks/s of event time, {ADS} ads (+ a viral ad with 40 % of clicks), 1,000 campaigns, 100 advertisers,",
            args.clicks,
            human(args.rate_per_s as f64)
        );
        println!(
            "1M users, 2 % retries, 0.1 % too late; windows 1m/5m/1h per ad, campaign and advertiser; clicks + distinct users; dedup on;"
        );
        println!(
            "parallelism {} (tally workers, Flink tasks); {} run(s) per row, interleaved; median (min–max).",
            args.parallelism, args.runs
        );
        println!();
        println!(
            "| comparison | engine | events/s | per core | CPU-s per 1M events | peak RSS | freshness p50 / p99 | other load | setup |"
        );
        println!("|---|---|---|---|---|---|---|---|---|");
        let cores = args.parallelism.min(std::thread::available_parallelism().map_or(1, |n| n.get())) as f64;
        for l in &self.lines {
            let fresh =
                l.freshness.map_or("–".to_owned(), |(p50, p99)| format!("{:.2} s / {:.2} s", f64::from(p50) / 1e3, f64::from(p99) / 1e3));
            println!(
                "| {} | {} | {} | {} | {:.2} | {:.0} MiB | {fresh} | {:.2} | {} |",
                l.comparison.name(),
                l.engine,
                l.events_per_s.cell(),
                human(l.events_per_s.median / cores),
                l.cpu_per_million,
                l.peak_rss_mib,
                l.other_load,
                l.note
            );
        }
        println!();
        for comparison in COMPARISONS {
            let ratios: Vec<(&str, f64)> =
                self.ratios.iter().filter(|(c, _, _)| *c == comparison).filter_map(|(_, peer, r)| Some((*peer, (*r)?))).collect();
            // The strongest peer is the one tally leads least.
            if let Some((peer, lead)) = ratios.iter().copied().min_by(|a, b| a.1.total_cmp(&b.1)) {
                let others: Vec<String> = ratios.iter().filter(|(p, _)| *p != peer).map(|(p, r)| format!("{p} {r:.1}×")).collect();
                println!(
                    "{}: tally/{peer} {lead:.2}× events/s against the strongest peer{}",
                    comparison.name(),
                    if others.is_empty() { String::new() } else { format!(" (others: {})", others.join(", ")) }
                );
            }
        }
        if !results.e2e.is_empty() {
            let samples = || results.e2e.iter().flat_map(|(_, samples)| samples);
            let finals = final_row_ms(results);
            let unseen: u64 = samples().map(|s| s.unseen).sum();
            println!(
                "e2e events/s = clicks acknowledged in the measured interval ÷ (interval + time for the job to catch up). freshness = a probe"
            );
            println!(
                "click's 202 until the query API's committed row of its window counts it ({} probes, {unseen} never seen);",
                samples().map(|s| s.visible_ms.len()).sum::<usize>()
            );
            match finals.is_empty() {
                true => println!("no probe window ended early enough in the runs to see its final row (runs of 90 s or more do)."),
                false => println!(
                    "window end → final row visible: p50 {:.1} s, p99 {:.1} s over {} windows (slack 5 s + allowed lateness 10 s are configured waits).",
                    f64::from(percentile(&finals, 0.5)) / 1e3,
                    f64::from(percentile(&finals, 0.99)) / 1e3,
                    finals.len()
                ),
            }
        }
        if let Some(m) = &self.memory {
            println!();
            println!("memory: the checkpointed job at 1M clicks/s of event time for {} s, dedup horizon 1 s vs 60 s", args.memory_seconds);
            println!();
            println!("| dedup horizon | peak RSS | most ids remembered at once | events/s |");
            println!("|---|---|---|---|");
            for (horizon, rss, ids, eps) in &m.rows {
                println!("| {} s | {rss:.0} MiB | {} | {} |", horizon / 1_000, human(*ids), human(*eps));
            }
            println!();
            match m.bytes_per_id {
                Some(bytes) => println!("a remembered request id costs {bytes:.1} bytes of RSS (target ≤ 24 B)"),
                None => println!("the runs are too short for a figure per remembered id (the horizons' ids must differ by 5M or more)"),
            }
            println!("the job itself, with the 1 s horizon: {:.0} MiB peak RSS (target ≤ 1 GB for 10k ads)", m.base_rss_mib);
        }
        println!();
        if let Some(m) = &self.memory {
            println!("memory bytes per remembered id: {}", m.bytes_per_id.map_or("n/a".to_owned(), |b| format!("{b:.1}")));
            println!("memory base rss mib: {:.0}", m.base_rss_mib);
        }
        for (comparison, peer, ratio) in &self.ratios {
            let ratio = ratio.map_or("n/a".to_owned(), |r| format!("{r:.2}"));
            println!("ratio {} tally/{peer}: {ratio}", comparison.name());
            if *peer == FlinkPeer::Sql.name() {
                // The line of earlier invocations, which had the SQL job as their only peer.
                println!("ratio {} tally/flink: {ratio}", comparison.name());
            }
        }
        if let Some(e2e) = self.e2e {
            println!("e2e clicks/s: {:.0}", e2e.median);
        }
    }

    /// The figures as JSON, for `bench/plot.py`.
    fn json(&self, results: &Results, args: &Args) -> String {
        let spread = |s: Spread| json!({ "median": s.median, "min": s.min, "max": s.max });
        let rows: Vec<Value> = self
            .lines
            .iter()
            .map(|l| {
                json!({
                    "comparison": l.comparison.name(),
                    "engine": l.engine,
                    "events_per_s": spread(l.events_per_s),
                    "cpu_s_per_million": l.cpu_per_million,
                    "peak_rss_mib": l.peak_rss_mib,
                    "freshness_ms": l.freshness.map(|(p50, p99)| json!({ "p50": p50, "p99": p99 })),
                    "note": l.note,
                })
            })
            .collect();
        let finals = final_row_ms(results);
        let finals = (!finals.is_empty()).then(|| json!({ "p50": percentile(&finals, 0.5), "p99": percentile(&finals, 0.99) }));
        let memory = self.memory.as_ref().map(|m| json!({ "bytes_per_id": m.bytes_per_id, "base_rss_mib": m.base_rss_mib }));
        let ratios: serde_json::Map<String, Value> =
            self.ratios.iter().map(|(c, peer, r)| (format!("{} tally/{peer}", c.name()), json!(r))).collect();
        let document = json!({
            "machine": self.machine,
            "versions": self.versions,
            "runs": args.runs,
            "clicks": args.clicks,
            "rows": rows,
            "ratios": ratios,
            "final_row_ms": finals,
            "memory": memory,
        });
        serde_json::to_string_pretty(&document).expect("figures serialize") + "\n"
    }
}

/// Window end → final row visible, over every probe window of every
/// end-to-end run that saw one, sorted.
fn final_row_ms(results: &Results) -> Vec<u32> {
    let mut finals: Vec<u32> = results.e2e.iter().flat_map(|(_, samples)| samples).flat_map(|s| s.final_ms.iter().copied()).collect();
    finals.sort_unstable();
    finals
}

fn memory_figures(results: &Results) -> Option<MemoryFigures> {
    let rows: Vec<(u64, f64, f64, f64)> = results
        .memory
        .iter()
        .map(|(horizon, samples)| {
            let of = |f: fn(&Sample) -> f64| median(&samples.iter().map(f).collect::<Vec<f64>>());
            (*horizon, of(|s| s.peak_rss_mib), of(|s| s.remembered_max as f64), of(|s| s.events_per_s))
        })
        .collect();
    let (short, long) = (rows.first()?, rows.last()?);
    let ids = long.2 - short.2;
    let bytes_per_id = (ids >= MIN_IDS_APART).then(|| (long.1 - short.1) * 1_048_576.0 / ids);
    Some(MemoryFigures { bytes_per_id, base_rss_mib: short.1, rows: rows.clone() })
}

/// Cores, memory and the date.
fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mem_kb = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| m.lines().find_map(|l| l.strip_prefix("MemTotal:")?.trim().strip_suffix("kB")?.trim().parse::<u64>().ok()))
        .unwrap_or(0);
    let date = command_line("date", &["-u", "+%Y-%m-%d"]).unwrap_or_default();
    format!("{date}, {cores} cores, {:.0} GiB", mem_kb as f64 / 1_048_576.0)
}

fn versions(results: &Results, args: &Args) -> String {
    let rustc = command_line("rustc", &["--version"]).unwrap_or_else(|| "rustc ?".to_owned());
    let java = Command::new("java")
        .arg("-version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stderr).lines().next().map(str::to_owned))
        .unwrap_or_else(|| "java ?".to_owned());
    let flink = if args.flink && !results.flink_version.is_empty() {
        format!("Flink {} (DataStream and SQL), ", results.flink_version)
    } else {
        String::new()
    };
    format!("tally {} ({rustc}, timely 0.32, differential-dataflow 0.26); {flink}{java}", env!("CARGO_PKG_VERSION"))
}

fn command_line(program: &str, args: &[&str]) -> Option<String> {
    let output = Command::new(program).args(args).output().ok()?;
    String::from_utf8_lossy(&output.stdout).lines().next().map(str::to_owned)
}
