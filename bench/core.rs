//! Core throughput benchmark: the clicks job on generated clicks, by job shape.
//!
//! A program, not a timed test (see `bench/README.md`): it prints a table and
//! never asserts on a timing. It runs four shapes of the job through
//! `tally::run::run` with the generator source and the memory sink:
//!
//! - `full`: the default job (dedup, 1m/5m/1h windows, ad/campaign/advertiser,
//!   clicks + distinct users);
//! - `no-distinct`: the same without distinct users;
//! - `no-dups`: the full job on input generated with `duplicate_rate = 0`
//!   (dedup stays on: it is part of correctness and has no off switch);
//! - `count-only`: clicks per ad only, no distinct users.
//!
//! Each configuration runs in a child process (this program re-invoked with
//! the hidden `--child CONFIG` flag) so that the peak RSS it reports
//! (`VmHWM`) is that configuration's own. Throughput is clicks read ÷
//! `RunReport::elapsed`, which covers the dataflow from the workers' start
//! to their end, generating the clicks included (each worker makes its
//! partitions' clicks as it reads them); making the catalog is timed
//! separately as the wall time of the `run` call minus `elapsed`.
//!
//! The peer runs elsewhere: `bench/compare.rs` (`bench/run.sh`) runs a
//! straightforward Flink SQL job of the same workload in the same
//! invocation. This program breaks tally's own
//! figure down by job shape.
//!
//! The input's event-time rate (`--rate`, clicks per second of event time)
//! decides how much pre-aggregation can fold: the default is the product's
//! peak of 1M clicks/s, where a 1 s epoch folds ~100 clicks per ad partial;
//! at 20k clicks/s over 10k ads it folds ~2 and the partials dominate.
//!
//! Usage: `cargo bench --bench core -- [--clicks N] [--rate R] [--runs R] [--workers W] [--smoke]`

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{at_most, cpu_time, median, min_max, number, peak_rss_kb, CLOCK_TICKS_PER_S};
use tally::event::KeyType;
use tally::job::{Job, SinkSpec, SourceSpec};
use tally::run::{run, RunOptions};
use tally::sources::generator::GeneratorConfig;

const DEFAULT_CLICKS: u64 = 5_000_000;
const DEFAULT_RUNS: usize = 3;
const DEFAULT_WORKERS: usize = 2;
const SMOKE_CLICKS: u64 = 200_000;
const ADS: u32 = 10_000;
/// Event-time rate of the generated input: the product's peak load.
const DEFAULT_RATE_PER_S: u64 = 1_000_000;
/// Largest accepted `--clicks`.
const MAX_CLICKS: u64 = 100_000_000;
/// Largest accepted `--runs`.
const MAX_RUNS: usize = 100;

/// One shape of the job under test.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Config {
    Full,
    NoDistinct,
    NoDuplicates,
    CountOnly,
}

const CONFIGS: [Config; 4] = [Config::Full, Config::NoDistinct, Config::NoDuplicates, Config::CountOnly];

impl Config {
    fn name(self) -> &'static str {
        match self {
            Config::Full => "full",
            Config::NoDistinct => "no-distinct",
            Config::NoDuplicates => "no-dups",
            Config::CountOnly => "count-only",
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Config::Full => "full job (dedup + distinct users)",
            Config::NoDistinct => "without distinct users",
            Config::NoDuplicates => "no duplicates in input",
            Config::CountOnly => "count only (per ad)",
        }
    }

    fn parse(name: &str) -> Option<Config> {
        CONFIGS.into_iter().find(|c| c.name() == name)
    }

    fn job(self, clicks: u64, rate_per_s: u64) -> Job {
        let mut job = Job::defaults(Path::new("bench-core.toml"));
        let duplicate_rate = match self {
            Config::NoDuplicates => 0.0,
            _ => GeneratorConfig::default().duplicate_rate,
        };
        job.source = SourceSpec::Generator(GeneratorConfig { clicks, ads: ADS, duplicate_rate, rate_per_s, ..Default::default() });
        job.sink = SinkSpec::Memory;
        match self {
            Config::Full | Config::NoDuplicates => {}
            Config::NoDistinct => job.distinct_users = false,
            Config::CountOnly => {
                job.distinct_users = false;
                job.group_by = vec![KeyType::Ad];
            }
        }
        job
    }
}

/// Command-line settings.
#[derive(Debug)]
struct Args {
    clicks: u64,
    rate_per_s: u64,
    runs: usize,
    workers: usize,
    smoke: bool,
    child: Option<Config>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        clicks: DEFAULT_CLICKS,
        rate_per_s: DEFAULT_RATE_PER_S,
        runs: DEFAULT_RUNS,
        workers: DEFAULT_WORKERS,
        smoke: false,
        child: None,
    };
    let (mut clicks, mut runs) = (None, None);
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        match flag.as_str() {
            "--clicks" => clicks = Some(number(&flag, it.next())?),
            "--runs" => runs = Some(number(&flag, it.next())? as usize),
            "--rate" => args.rate_per_s = number(&flag, it.next())?.max(1),
            "--workers" => args.workers = number(&flag, it.next())? as usize,
            "--smoke" => args.smoke = true,
            "--child" => {
                let name = it.next().ok_or("--child: missing configuration")?;
                args.child = Some(Config::parse(&name).ok_or_else(|| format!("--child: unknown configuration {name:?}"))?);
            }
            // `cargo bench` passes `--bench` to harness-less benches.
            "--bench" => {}
            other => {
                return Err(format!("unknown argument {other:?}; usage: core [--clicks N] [--rate R] [--runs R] [--workers W] [--smoke]"))
            }
        }
    }
    args.clicks = clicks.unwrap_or(if args.smoke { SMOKE_CLICKS } else { DEFAULT_CLICKS });
    args.runs = runs.unwrap_or(if args.smoke { 1 } else { DEFAULT_RUNS });
    at_most("--clicks", args.clicks, MAX_CLICKS)?;
    at_most("--runs", args.runs, MAX_RUNS)?;
    at_most("--workers", args.workers, tally::run::MAX_WORKERS)?;
    Ok(args)
}

fn main() {
    let args = match parse_args() {
        Ok(args) => args,
        Err(message) => {
            eprintln!("core: {message}");
            std::process::exit(2);
        }
    };
    let result = match args.child {
        Some(config) => child(config, &args),
        None => parent(&args),
    };
    if let Err(message) = result {
        eprintln!("core: {message}");
        std::process::exit(1);
    }
}

// ---- child: runs one configuration, prints machine-readable lines ----------

/// Runs `config` `args.runs` times and prints one `run …` line per run, then
/// `peak_rss_kb …` (this process's VmHWM).
fn child(config: Config, args: &Args) -> Result<(), String> {
    let job = config.job(args.clicks, args.rate_per_s);
    let options = RunOptions { workers: args.workers, ..Default::default() };
    for _ in 0..args.runs {
        let (process_before, main_before) = (cpu_time("/proc/self/stat"), cpu_time("/proc/thread-self/stat"));
        let started = Instant::now();
        let report = run(&job, &options).map_err(|e| format!("{}: {e}", config.name()))?;
        let wall = started.elapsed();
        // The catalog is made on this thread before the workers start, and
        // this thread only waits while they run: the rest is the workers'.
        let process = cpu_time("/proc/self/stat").saturating_sub(process_before);
        let main = cpu_time("/proc/thread-self/stat").saturating_sub(main_before);
        let rows = report.memory.as_ref().map_or(0, |m| m.rows.len());
        let sample = Sample {
            clicks: report.stats.read_total(),
            elapsed: report.elapsed,
            setup: wall.saturating_sub(report.elapsed),
            worker_cpu: process.saturating_sub(main),
            duplicates: report.stats.duplicates,
            rows: rows as u64,
        };
        println!("{}", sample.to_line());
    }
    println!("peak_rss_kb {}", peak_rss_kb("/proc/self/status").unwrap_or(0));
    println!("cpu_ns {}", cpu_time("/proc/self/stat").as_nanos());
    Ok(())
}

/// CPU time the machine's processes used since boot (`/proc/stat`, all
/// cores): user, nice, system, irq and softirq; not idle, iowait or steal
/// (steal is the hypervisor's, invisible to this machine's processes).
fn machine_busy() -> Duration {
    const BUSY_FIELDS: [usize; 5] = [0, 1, 2, 5, 6];
    let ticks = std::fs::read_to_string("/proc/stat").ok().and_then(|stat| {
        let line = stat.lines().next()?.strip_prefix("cpu ")?;
        let fields: Vec<u64> = line.split_whitespace().filter_map(|f| f.parse().ok()).collect();
        BUSY_FIELDS.iter().map(|&i| fields.get(i).copied()).sum::<Option<u64>>()
    });
    Duration::from_millis(ticks.unwrap_or(0) * 1_000 / CLOCK_TICKS_PER_S)
}

/// What one run measured.
#[derive(Clone, Copy, Debug)]
struct Sample {
    /// Clicks the sources read, duplicates included.
    clicks: u64,
    /// Dataflow time (`RunReport::elapsed`).
    elapsed: Duration,
    /// Wall time of `run` outside the dataflow: making the catalog.
    setup: Duration,
    /// CPU time of the worker threads (process CPU minus the main thread's).
    worker_cpu: Duration,
    duplicates: u64,
    rows: u64,
}

impl Sample {
    fn to_line(self) -> String {
        format!(
            "run clicks={} elapsed_ns={} setup_ns={} worker_cpu_ns={} duplicates={} rows={}",
            self.clicks,
            self.elapsed.as_nanos(),
            self.setup.as_nanos(),
            self.worker_cpu.as_nanos(),
            self.duplicates,
            self.rows
        )
    }

    fn from_line(line: &str) -> Option<Sample> {
        let mut fields = line.strip_prefix("run ")?.split(' ').map(|f| f.split_once('='));
        let mut next = |key: &str| -> Option<u64> {
            let (k, v) = fields.next()??;
            (k == key).then(|| v.parse().ok())?
        };
        Some(Sample {
            clicks: next("clicks")?,
            elapsed: Duration::from_nanos(next("elapsed_ns")?),
            setup: Duration::from_nanos(next("setup_ns")?),
            worker_cpu: Duration::from_nanos(next("worker_cpu_ns")?),
            duplicates: next("duplicates")?,
            rows: next("rows")?,
        })
    }

    fn events_per_s(self) -> f64 {
        self.clicks as f64 / self.elapsed.as_secs_f64()
    }

    /// Clicks per second of worker CPU time: what one fully busy core does,
    /// whatever else the machine was running.
    fn events_per_cpu_s(self) -> f64 {
        self.clicks as f64 / self.worker_cpu.as_secs_f64().max(1e-3)
    }
}

// ---- parent: one child per configuration, then the table --------------------

/// The figures of one configuration, from its child.
struct Measured {
    config: Config,
    samples: Vec<Sample>,
    peak_rss_kb: u64,
    /// Average cores other processes kept busy while the child ran.
    other_load: f64,
}

fn parent(args: &Args) -> Result<(), String> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let used_cores = args.workers.min(cores);
    eprintln!(
        "core: {} clicks at {} clicks/s of event time, {} ads, {} worker(s) on {} core(s), {} run(s) per configuration{}",
        args.clicks,
        args.rate_per_s,
        ADS,
        args.workers,
        cores,
        args.runs,
        if args.smoke { " (smoke)" } else { "" }
    );
    let mut measured = Vec::new();
    for config in CONFIGS {
        eprintln!("core: running {} ...", config.name());
        measured.push(run_child(config, args)?);
    }
    print_table(&measured, args, used_cores);
    let full = measured.iter().find(|m| m.config == Config::Full).expect("full is always run");
    let full_rate = median(&rates(&full.samples));
    println!();
    println!("core events/s full: {full_rate:.0}");
    Ok(())
}

fn run_child(config: Config, args: &Args) -> Result<Measured, String> {
    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    let (busy_before, started) = (machine_busy(), Instant::now());
    let output = Command::new(exe)
        .args(["--child", config.name()])
        .args(["--clicks", &args.clicks.to_string()])
        .args(["--rate", &args.rate_per_s.to_string()])
        .args(["--runs", &args.runs.to_string()])
        .args(["--workers", &args.workers.to_string()])
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("{}: cannot start child: {e}", config.name()))?;
    if !output.status.success() {
        return Err(format!("{}: child failed ({})", config.name(), output.status));
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let samples: Vec<Sample> = stdout.lines().filter_map(Sample::from_line).collect();
    let (busy, wall) = (machine_busy().saturating_sub(busy_before), started.elapsed());
    let field = |name: &str| stdout.lines().find_map(|l| l.strip_prefix(name)?.trim().parse::<u64>().ok());
    match (samples.len() == args.runs, field("peak_rss_kb "), field("cpu_ns ")) {
        (true, Some(peak_rss_kb), Some(cpu_ns)) => {
            let others = busy.saturating_sub(Duration::from_nanos(cpu_ns));
            let other_load = others.as_secs_f64() / wall.as_secs_f64();
            Ok(Measured { config, samples, peak_rss_kb, other_load })
        }
        _ => Err(format!("{}: child printed unexpected output:\n{stdout}", config.name())),
    }
}

fn rates(samples: &[Sample]) -> Vec<f64> {
    samples.iter().map(|s| s.events_per_s()).collect()
}

fn millions(v: f64) -> String {
    format!("{:.2}M", v / 1e6)
}

fn print_table(measured: &[Measured], args: &Args, used_cores: usize) {
    println!();
    println!(
        "tally core: {} clicks, {} ads, {} worker(s), {} run(s) each; events/s = clicks read / dataflow time",
        args.clicks, ADS, args.workers, args.runs
    );
    println!();
    println!(
        "| configuration | events/s median (min–max) | per core (÷{used_cores}) | per worker CPU-s | catalog s | peak RSS | dups dropped | rows out | other load |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for m in measured {
        let rates = rates(&m.samples);
        let (lo, hi) = min_max(&rates);
        let mid = median(&rates);
        let setup = median(&m.samples.iter().map(|s| s.setup.as_secs_f64()).collect::<Vec<_>>());
        let per_cpu = median(&m.samples.iter().map(|s| s.events_per_cpu_s()).collect::<Vec<_>>());
        let last = m.samples.last().expect("at least one run");
        println!(
            "| {} | {} ({}–{}) | {} | {} | {:.2} | {:.0} MiB | {} | {} | {:.2} cores |",
            m.config.describe(),
            millions(mid),
            millions(lo),
            millions(hi),
            millions(mid / used_cores as f64),
            millions(per_cpu),
            setup,
            m.peak_rss_kb as f64 / 1024.0,
            last.duplicates,
            last.rows,
            m.other_load
        );
    }
    println!();
    println!("per core = median events/s ÷ min(workers, cores). per worker CPU-s = clicks ÷");
    println!("CPU time of the worker threads, which other load on the machine does not change.");
    println!("Clicks are generated inside the dataflow time, by the worker that reads each partition.");
    println!("catalog s = the run call's wall time minus the dataflow time (making the catalog),");
    println!("median. Peak RSS = each configuration's own child process (VmHWM). rows out includes");
    println!("early (partial) rows, whose number follows wall time. other load = cores kept busy by");
    println!("other processes meanwhile; figures taken with other load well above 0 are not comparable.");
    println!("The peer, a straightforward Flink SQL job of the same workload, in the same invocation: bench/run.sh.");
}
